/* tracks-collector: one visit per page view, posted to the origin this script came from. No cookie, no storage. */
(function (w, d, h) {
  var s = d.currentScript;
  if (!s) return;
  var to = new URL(s.src).origin + '/collect',
    game = s.dataset.game,
    consent = s.dataset.consent == 'true',
    ref = d.referrer,
    url, id;

  function send() {
    var b = JSON.stringify({url: url, referrer: ref, consent: consent, game: game, id: id});
    // A beacon outlives the page; fetch with keepalive is the fallback. A string body is
    // text/plain, so neither needs a CORS preflight.
    if (!(navigator.sendBeacon && navigator.sendBeacon(to, b)))
      fetch(to, {method: 'POST', keepalive: true, body: b, headers: {'Content-Type': 'text/plain'}})
        .catch(function () {});
  }

  function here() { return location.href.split('#')[0]; }

  function view() {
    var u = here();
    // A fragment change or a state-only push is the same page.
    if (u == url) return;
    if (url) ref = url;
    url = u;
    // The page view's id lives only in this closure: it lets consent update this visit.
    id = 'v' + crypto.getRandomValues(new Uint32Array(4)).join('-');
    send();
  }

  var push = h.pushState, replace = h.replaceState;
  h.pushState = function () {
    var r = push.apply(this, arguments);
    view();
    return r;
  };
  // Rewriting the current entry is no new page view, but later ones compare against it.
  h.replaceState = function () {
    var r = replace.apply(this, arguments);
    url = here();
    return r;
  };
  w.addEventListener('popstate', view);
  w.tracks = {consent: function (c) { consent = !!c; send(); }};
  view();
})(window, document, history);

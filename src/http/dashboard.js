// The dashboard: reads /api/v1/aggregates with a token held in memory only, and draws it.
// No data is embedded in the page and nothing is loaded from anywhere else (the CSP says so).
// The per-campaign rules are those of the command line's table (src/summary.rs).
"use strict";

(function () {
  const FIRST_OPEN = "first_game_open";
  const DIRECT = "(direct)";
  const OTHER = "(other)";
  const DAY_MS = 86400000;
  const SVG = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);
  const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  const share = new Intl.NumberFormat(undefined, {
    style: "percent",
    minimumFractionDigits: 1,
    maximumFractionDigits: 1,
  });
  const count = (value) => integer.format(value);
  const percent = (value) => (value === null ? "–" : share.format(value));
  const ratio = (part, whole) => (whole > 0 ? part / whole : null);

  let token = null;
  let sortKey = null;
  let sortDescending = true;
  let campaigns = [];
  // The report on screen, for redrawing the chart at a new width.
  let shown = null;
  // The report as the API answered it, and the row clicked to filter every panel to it:
  // {field, value, text}, kept in the address's query (never the token).
  let loaded = null;
  let filter = null;
  // The period of the same length just before, when the retention window still holds it.
  let previous = null;
  let resizing = null;
  const games = new Set();

  function utcDay(date) {
    return date.toISOString().slice(0, 10);
  }

  function daysBefore(day, days) {
    return utcDay(new Date(Date.parse(day + "T00:00:00Z") - days * DAY_MS));
  }

  function status(text, kind) {
    const line = $("status");
    line.textContent = text;
    line.className = "status " + (kind || "");
    line.hidden = !text;
  }

  // The token from the fragment (`#token=...`), then the fragment is dropped from the address
  // bar and the history, so that the token is not left on screen or in the tab's history.
  function tokenFromFragment() {
    const fragment = new URLSearchParams(location.hash.slice(1));
    const found = fragment.get("token");
    if (found !== null) {
      history.replaceState(null, "", location.pathname + location.search);
    }
    return found && found.trim() ? found.trim() : null;
  }

  // A request to the collector's API: the token from memory, nothing cached, no cookie.
  function api(path) {
    return fetch(path, {
      headers: { Authorization: "Bearer " + token },
      cache: "no-store",
      credentials: "omit",
    });
  }

  function showLogin(message) {
    token = null;
    $("report").hidden = true;
    $("range").hidden = true;
    $("login").hidden = false;
    status(message || "", message ? "error" : "");
    $("token").focus();
  }

  async function load(retried) {
    const from = $("from").value;
    const to = $("to").value;
    if (!from || !to) {
      status("Choose a first and a last day.", "error");
      return;
    }
    const query = new URLSearchParams({ from, to });
    if ($("game").value) {
      query.set("game", $("game").value);
    }
    status("Loading " + from + " … " + to + " …", "");
    let answer;
    try {
      answer = await api("/api/v1/aggregates?" + query);
    } catch (error) {
      status("The collector did not answer. Check that it runs and that this address reaches it, then press Show again.", "error");
      return;
    }
    let body = null;
    try {
      body = await answer.json();
    } catch (error) {
      body = null;
    }
    if (answer.status === 401 || answer.status === 403) {
      showLogin("The collector refused this token. It needs the aggregates scope: tracks-collector token new --name dashboard --scope aggregates.");
      return;
    }
    if (!answer.ok || body === null) {
      const message = body && body.message ? body.message : "the collector answered " + answer.status;
      // A range that reaches past the retention window starts at its oldest day instead.
      const oldest = /oldest day is (\d{4}-\d{2}-\d{2})/.exec(message);
      if (oldest && !retried) {
        $("from").value = oldest[1];
        return load(true);
      }
      status("Cannot show this range: " + message + ".", "error");
      return;
    }
    $("range").hidden = false;
    $("login").hidden = true;
    loaded = body;
    previous = await previousPeriod(from, to);
    draw(filtered(body));
    loadLedger();
    refreshNow();
  }

  // The report of the days just before `from`, as many as from `from` to `to`; null when
  // they reach past the retention window (the API refuses them) or cannot be read.
  async function previousPeriod(from, to) {
    const days = Math.round((Date.parse(to) - Date.parse(from)) / DAY_MS) + 1;
    const query = new URLSearchParams({ from: daysBefore(from, days), to: daysBefore(from, 1) });
    if ($("game").value) query.set("game", $("game").value);
    try {
      const answer = await api("/api/v1/aggregates?" + query);
      return answer.ok ? await answer.json() : null;
    } catch (error) {
      return null;
    }
  }

  // The change from `before` to `now`: relative for counts (▲ 12%), in points for rates
  // (▼ 3.0 pt); "new" from nothing; empty without a previous period.
  function change(now, before, rate) {
    if (before === undefined) return "";
    if (now === null || before === null) return "–";
    if (rate) {
      const points = (now - before) * 100;
      return (points >= 0 ? "▲ " : "▼ ") + Math.abs(points).toFixed(1) + " pt";
    }
    if (before === 0) return now === 0 ? "–" : "▲ new";
    const relative = ((now - before) / before) * 100;
    return (relative >= 0 ? "▲ " : "▼ ") + Math.abs(relative).toFixed(0) + "%";
  }

  // In a cluster the report is every node's that answered: say which, and loudly which not.
  function drawCluster(cluster) {
    const line = $("cluster");
    line.hidden = !cluster;
    if (!cluster) return;
    const missing = cluster.unreachable.map((node) => node.node + " (" + node.error + ")");
    line.textContent = "Merged from " + cluster.merged.length + " node" + (cluster.merged.length === 1 ? "" : "s") +
      ": " + cluster.merged.join(", ") + "." + (missing.length ? " Not reachable, so missing from every number: " +
      missing.join("; ") + "." : "");
    line.className = "status " + (missing.length ? "error" : "");
  }

  // The rows of `report` that the filter keeps: a field only one kind of row has (device in
  // traffic, storefront and platform in conversions, the referrer in traffic and sources, the
  // page in pages) leaves the other kinds whole.
  function filtered(report) {
    if (filter === null) return report;
    const only = (rows, field) => (rows || []).filter((row) =>
      filter.field !== field || (row[field] || null) === filter.value);
    const keep = (row, traffic) => {
      switch (filter.field) {
        case "campaign": return label(row, traffic ? row.referrer_host : null) === filter.value;
        case "device": return !traffic || row.device === filter.value;
        case "referrer_host": return !traffic || (row.referrer_host || null) === filter.value;
        case "page": return true;
        case "storefront":
        case "platform": return traffic || (row[filter.field] || null) === filter.value;
        default: return (row[filter.field] || null) === filter.value;
      }
    };
    return Object.assign({}, report, {
      traffic: report.traffic.filter((row) => keep(row, true)),
      conversions: report.conversions.filter((row) => keep(row, false)),
      sources: only(report.sources, "referrer_host"),
      pages: only(report.pages, "page"),
    });
  }

  function setFilter(next) {
    filter = next;
    const query = new URLSearchParams(location.search);
    if (filter === null) {
      query.delete("filter");
    } else {
      query.set("filter", JSON.stringify([filter.field, filter.value, filter.text]));
    }
    const search = query.toString();
    history.replaceState(null, "", location.pathname + (search ? "?" + search : ""));
    $("filter-chip").hidden = filter === null;
    $("filter-text").textContent = filter === null ? "" : filter.field + ": " + filter.text;
    if (loaded !== null) draw(filtered(loaded));
  }

  function filterFromQuery() {
    try {
      const [field, value, text] = JSON.parse(new URLSearchParams(location.search).get("filter"));
      if (["campaign", "storefront", "platform", "device", "country", "referrer_host", "page"].includes(field)) {
        filter = { field, value, text: String(text) };
        $("filter-chip").hidden = false;
        $("filter-text").textContent = field + ": " + text;
      }
    } catch (error) {
      filter = null;
    }
  }

  // Visitors of the last 30 minutes, asked again every 30 s while the tab is shown; a hidden
  // tab asks nothing, and asks at once when shown again.
  let nowTimer = null;
  async function refreshNow() {
    clearTimeout(nowTimer);
    nowTimer = null;
    if (document.visibilityState !== "visible" || token === null) return;
    try {
      const answer = await api("/api/v1/now");
      if (answer.ok) {
        const now = await answer.json();
        $("kpi-now").textContent = now.visitors === null ? "< " + now.fewer_than : count(now.visitors);
        document.body.dataset.now = String(now.visitors);
      }
    } catch (error) {
      // The next turn tries again.
    }
    nowTimer = setTimeout(refreshNow, 30000);
  }
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") refreshNow();
    else clearTimeout(nowTimer);
  });

  // What left this collector: its identity's fingerprint and the newest ledger rows. Shown
  // to a token with the metrics scope (an operator's); hidden for any other.
  async function loadLedger() {
    let answer;
    try {
      answer = await api("/api/v1/ledger?limit=10");
    } catch (error) {
      $("ledger-card").hidden = true;
      return;
    }
    if (!answer.ok) {
      $("ledger-card").hidden = true;
      return;
    }
    const ledger = await answer.json();
    $("fingerprint").textContent = ledger.fingerprint;
    const rows = ledger.rows.map((row) => {
      const tr = document.createElement("tr");
      const time = new Date(row.at * 1000).toISOString().replace("T", " ").slice(0, 19);
      const days = row.from === row.to ? row.from : row.from + " … " + row.to;
      const where = row.kind === "rotation" ? "new key" : row.kind === "anchor" ? row.size + " older rows" : row.destination;
      for (const text of [String(row.seq), time, row.kind, days, where]) {
        tr.append(element("td", text));
      }
      tr.append(element("td", row.kind === "anchor" ? "" : count(row.size)));
      return tr;
    });
    $("ledger").tBodies[0].replaceChildren(...rows);
    $("ledger-card").hidden = false;
  }

  // One campaign's label, as the command line's table shows it: a game open's source falls
  // back to its visit's referrer, and is (direct) without one.
  function label(row, referrer) {
    const source = row.source || referrer || null;
    if (source === null || source === DIRECT) return DIRECT;
    if (source === OTHER) return OTHER;
    return [source, row.medium, row.campaign].filter(Boolean).join(" / ");
  }

  function summarise(report) {
    const today = Date.parse(report.generated_at.slice(0, 10) + "T00:00:00Z");
    const byLabel = new Map();
    const entry = (name) => {
      if (!byLabel.has(name)) {
        byLabel.set(name, {
          label: name, visits: 0, visitors: 0, first_opens: 0, players: 0, direct: 0,
          d1Players: 0, d1Returned: 0, d7Players: 0, d7Returned: 0,
        });
      }
      return byLabel.get(name);
    };
    for (const row of report.traffic) {
      const campaign = entry(label(row, row.referrer_host));
      campaign.visits += row.visits;
      campaign.visitors += row.visitors;
    }
    for (const row of report.conversions) {
      if (row.event !== FIRST_OPEN) continue;
      const campaign = entry(label(row, null));
      campaign.first_opens += row.events;
      campaign.players += row.users;
      // The API's "(direct)" source: no visit brought these players.
      if (row.source === DIRECT) campaign.direct += row.users;
      const age = Math.round((today - Date.parse(row.day + "T00:00:00Z")) / DAY_MS);
      if (age > 1) {
        campaign.d1Players += row.users;
        campaign.d1Returned += row.returned_d1;
      }
      if (age > 7) {
        campaign.d7Players += row.users;
        campaign.d7Returned += row.returned_d7;
      }
    }
    const list = Array.from(byLabel.values());
    const total = { label: "Total" };
    for (const key of ["visits", "visitors", "first_opens", "players", "direct", "d1Players", "d1Returned", "d7Players", "d7Returned"]) {
      total[key] = list.reduce((sum, campaign) => sum + campaign[key], 0);
    }
    for (const campaign of list.concat([total])) {
      // Attributed players per visitor: players no visit brought are shown beside, not in it.
      campaign.conversion = ratio(campaign.players - campaign.direct, campaign.visitors);
      campaign.d1 = ratio(campaign.d1Returned, campaign.d1Players);
      campaign.d7 = ratio(campaign.d7Returned, campaign.d7Players);
    }
    return { list, total };
  }

  // Most visitors first by default, (direct) and (other) last; a clicked column sorts by it.
  function sorted(list) {
    const rank = (campaign) => (campaign.label === OTHER ? 2 : campaign.label === DIRECT ? 1 : 0);
    return list.slice().sort((a, b) => {
      if (sortKey === null) {
        return rank(a) - rank(b) || b.visitors - a.visitors || b.players - a.players ||
          a.label.localeCompare(b.label);
      }
      if (sortKey === "label") {
        return (sortDescending ? -1 : 1) * a.label.localeCompare(b.label);
      }
      const value = (campaign) => (campaign[sortKey] === null ? -1 : campaign[sortKey]);
      return (sortDescending ? value(b) - value(a) : value(a) - value(b)) ||
        a.label.localeCompare(b.label);
    });
  }

  function element(name, text, className) {
    const node = document.createElement(name);
    if (text !== undefined) node.textContent = text;
    if (className) node.className = className;
    return node;
  }

  function campaignRow(campaign, header) {
    const row = element("tr");
    if (!header) {
      row.className = "pick";
      row.addEventListener("click", () =>
        setFilter({ field: "campaign", value: campaign.label, text: campaign.label }));
    }
    const name = element(header ? "th" : "td", campaign.label, "label");
    if (header) name.scope = "row";
    if (campaign.label === DIRECT) name.title = "No campaign and no referrer, and game opens that no visit brought";
    if (campaign.label === OTHER) name.title = "Campaigns too small to show on their own (min_cell_size), merged";
    row.append(name);
    const earlier = campaigns.before ? (campaigns.before.get(campaign.label) || { players: 0 }) : undefined;
    const previousPlayers = header
      ? (campaigns.before ? Array.from(campaigns.before.values()).reduce((sum, c) => sum + c.players, 0) : undefined)
      : (earlier === undefined ? undefined : earlier.players);
    const cells = [
      count(campaign.visits), count(campaign.visitors), count(campaign.first_opens),
      count(campaign.players), percent(campaign.conversion),
      percent(campaign.d1), percent(campaign.d7),
      change(campaign.players, previousPlayers, false),
    ];
    // A phone shows each row as a card: every number says what it is.
    const names = ["Visits", "Visitors", "First opens", "Players", "Conversion", "D1 return", "D7 return",
      "Players vs before"];
    const titles = [null, null, null, null, null,
      campaign.d1Returned + " of " + campaign.d1Players + " players whose next day is over",
      campaign.d7Returned + " of " + campaign.d7Players + " players whose next seven days are over"];
    titles[4] = (campaign.players - campaign.direct) + " players a visit brought / " + campaign.visitors +
      " visitors (conversions.users of first_game_open / traffic.visitors)";
    cells.forEach((text, index) => {
      const cell = element("td", text);
      cell.dataset.name = names[index];
      if (titles[index]) cell.title = titles[index];
      if (index === 4 && campaign.conversion > 1) over(cell);
      row.append(cell);
    });
    return row;
  }

  // A rate above 100% is shown as it is, marked and explained, never clamped.
  function over(cell) {
    cell.classList.add("over");
    cell.textContent += " ⚠";
    cell.title = "More players than visitors: several players share one address (an office, a " +
      "household, a carrier's NAT, a local test), so each visitor brought more than one. " + cell.title;
  }

  function drawCampaigns() {
    const table = $("campaigns");
    const body = table.tBodies[0];
    body.replaceChildren(...sorted(campaigns.list).map((campaign) => campaignRow(campaign, false)));
    table.tFoot.replaceChildren(campaignRow(campaigns.total, true));
    for (const header of table.tHead.rows[0].cells) {
      const key = header.dataset.key;
      if (!key) continue;
      header.setAttribute("aria-sort", key === sortKey ? (sortDescending ? "descending" : "ascending") : "none");
    }
  }

  // The browser knows the countries' names in the reader's language; the code stays beside
  // it. Null is an address in no network of the database, or no database (privacy.geoip_db).
  const regions = typeof Intl.DisplayNames === "function" ?
    new Intl.DisplayNames([navigator.language || "en"], { type: "region" }) : null;
  function countryName(code) {
    if (!code) return "(unknown)";
    if (code === "(other)" || !regions) return code;
    try {
      const named = regions.of(code);
      return named && named !== code ? named + " (" + code + ")" : code;
    } catch (error) {
      return code;
    }
  }

  function split(id, rows, field, amount, nameOf) {
    const totals = new Map();
    const raws = new Map();
    for (const row of rows) {
      const name = nameOf(row[field]);
      totals.set(name, (totals.get(name) || 0) + amount(row));
      raws.set(name, row[field] || null);
    }
    const list = Array.from(totals.entries()).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
    const all = list.reduce((sum, item) => sum + item[1], 0);
    const table = $(id);
    if (list.length === 0) {
      table.replaceChildren(element("caption", "None in this range."));
      return;
    }
    table.replaceChildren(...list.map(([name, value]) => {
      const row = element("tr");
      row.className = "pick";
      row.addEventListener("click", () =>
        setFilter({ field, value: raws.get(name), text: name }));
      row.append(element("th", name, "label"));
      const bar = element("td", undefined, "share");
      bar.append(meter(all > 0 ? value / all : 0));
      row.append(bar, element("td", count(value)), element("td", percent(ratio(value, all))));
      return row;
    }));
  }

  // Sources (referrer hosts) and landing pages over the range: visits, visitors and the players
  // they brought, summed over the days as the API's rows are (docs/api.md, "Sources and
  // pages"); a click keeps only that one.
  function breakdown(id, rows, field) {
    const byName = new Map();
    for (const row of rows) {
      const name = row[field] || "(none)";
      if (!byName.has(name)) byName.set(name, { name, value: row[field] || null, visits: 0, visitors: 0, players: 0 });
      const sums = byName.get(name);
      sums.visits += row.visits;
      sums.visitors += row.visitors;
      sums.players += row.players;
    }
    const rank = (item) => (item.name === OTHER ? 2 : item.value === null ? 1 : 0);
    const list = Array.from(byName.values()).sort((a, b) => rank(a) - rank(b) ||
      b.visitors - a.visitors || b.players - a.players || a.name.localeCompare(b.name));
    const table = $(id);
    if (list.length === 0) {
      table.tBodies[0].replaceChildren();
      table.tBodies[0].append(element("tr"));
      table.tBodies[0].rows[0].append(element("td", "None in this range."));
      return;
    }
    table.tBodies[0].replaceChildren(...list.map((item) => {
      const row = element("tr");
      row.className = "pick";
      row.addEventListener("click", () => setFilter({ field, value: item.value, text: item.name }));
      row.append(element("th", item.name, "label"));
      const rate = element("td", percent(ratio(item.players, item.visitors)));
      if (item.visitors > 0 && item.players > item.visitors) over(rate);
      row.append(element("td", count(item.visits)), element("td", count(item.visitors)),
        element("td", count(item.players)), rate);
      return row;
    }));
  }

  function svg(name, attributes, text) {
    const node = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function meter(fraction) {
    const box = svg("svg", { viewBox: "0 0 100 8", preserveAspectRatio: "none", class: "meter", "aria-hidden": "true" });
    box.append(svg("rect", { x: 0, y: 0, width: 100, height: 8, class: "track" }));
    box.append(svg("rect", { x: 0, y: 0, width: (fraction * 100).toFixed(2), height: 8, class: "fill" }));
    return box;
  }

  // A line chart of two daily series, drawn here as SVG: no library, nothing to download.
  function drawChart(report) {
    const days = [];
    for (let day = report.from; day <= report.to; day = daysBefore(day, -1)) days.push(day);
    const visits = new Map(days.map((day) => [day, 0]));
    const opens = new Map(days.map((day) => [day, 0]));
    for (const row of report.traffic) visits.set(row.day, (visits.get(row.day) || 0) + row.visits);
    // The cards' definitions: visits, and players (users of first_game_open).
    for (const row of report.conversions) {
      if (row.event === FIRST_OPEN) opens.set(row.day, (opens.get(row.day) || 0) + row.users);
    }
    const series = [
      { name: "Visits", values: days.map((day) => visits.get(day)), className: "visits" },
      { name: "Players", values: days.map((day) => opens.get(day)), className: "opens" },
    ];
    // Drawn at the box's own width, so that its text keeps its size on a phone.
    const width = Math.max(280, Math.round($("chart").clientWidth || 720));
    const height = width < 500 ? 200 : 240, left = 44, right = 14, top = 12, bottom = 28;
    const peak = Math.max(1, ...series.flatMap((line) => line.values));
    const step = niceStep(peak / 4);
    const ceiling = Math.ceil(peak / step) * step;
    const x = (index) => left + (days.length === 1 ? (width - left - right) / 2 : index * (width - left - right) / (days.length - 1));
    const y = (value) => top + (height - top - bottom) * (1 - value / ceiling);
    const chart = svg("svg", {
      viewBox: `0 0 ${width} ${height}`, role: "img",
      "aria-label": "Visits and players per day, " + report.from + " to " + report.to,
    });
    for (let value = 0; value <= ceiling; value += step) {
      chart.append(svg("line", { x1: left, x2: width - right, y1: y(value), y2: y(value), class: "grid" }));
      chart.append(svg("text", { x: left - 6, y: y(value) + 4, class: "axis end" }, count(value)));
    }
    const every = Math.ceil(days.length / Math.max(2, Math.floor(width / 90)));
    days.forEach((day, index) => {
      const last = index === days.length - 1;
      if ((index % every === 0 && days.length - 1 - index >= every / 2) || last) {
        const anchor = last && days.length > 1 ? "end" : index === 0 ? "start" : "middle";
        chart.append(svg("text", { x: x(index), y: height - 8, class: "axis " + anchor }, day.slice(5)));
      }
    });
    for (const line of series) {
      const points = line.values.map((value, index) => `${x(index).toFixed(1)},${y(value).toFixed(1)}`);
      chart.append(svg("polyline", { points: points.join(" "), class: "line " + line.className }));
      line.values.forEach((value, index) => {
        const dot = svg("circle", { cx: x(index), cy: y(value), r: 3, class: "dot " + line.className });
        dot.append(svg("title", {}, days[index] + ": " + count(value) + " " + line.name.toLowerCase()));
        chart.append(dot);
      });
    }
    const legend = element("p", undefined, "legend");
    for (const line of series) {
      const key = element("span", undefined, "key " + line.className);
      key.append(element("i"), document.createTextNode(line.name + " " + count(line.values.reduce((a, b) => a + b, 0))));
      legend.append(key);
    }
    $("chart").replaceChildren(chart, legend);
  }

  function niceStep(raw) {
    const power = Math.pow(10, Math.floor(Math.log10(Math.max(raw, 1))));
    for (const factor of [1, 2, 5, 10]) {
      if (raw <= factor * power) return factor * power;
    }
    return 10 * power;
  }

  function draw(report) {
    for (const row of report.conversions) games.add(row.game);
    for (const row of report.traffic) if (row.game) games.add(row.game);
    const select = $("game");
    const chosen = select.value;
    select.replaceChildren(element("option", "All games"));
    select.options[0].value = "";
    for (const game of Array.from(games).sort()) {
      const option = element("option", game);
      option.value = game;
      select.append(option);
    }
    select.value = chosen;

    drawCluster(report.cluster);
    $("generated").textContent = "Collector " + report.collector_id + " · " + report.attribution.model.replace("_", " ") +
      " attribution, " + report.attribution.lookback_days + "-day lookback · generated " + report.generated_at;
    if (report.traffic.length === 0 && report.conversions.length === 0) {
      $("report").hidden = true;
      status("Nothing recorded from " + report.from + " to " + report.to + ". Choose a longer range, or check " +
        "that landing pages load /tracks.js and that game builds send their opens to /measure (README, Endpoints).", "empty");
      return;
    }
    status(report.conversions.some((row) => row.event === FIRST_OPEN) ? "" :
      "No first_game_open events in this range: players, conversion and returns count first opens only.", "empty");
    campaigns = summarise(report);
    const before = previous === null ? null : summarise(filtered(previous));
    campaigns.before = before === null ? null : new Map(before.list.map((campaign) => [campaign.label, campaign]));
    const total = campaigns.total;
    const was = (key) => (before === null ? undefined : before.total[key]);
    for (const [key, rate] of [["visits", false], ["visitors", false], ["players", false],
      ["conversion", true], ["direct", false], ["d1", true], ["d7", true]]) {
      $("kpi-" + key + "-change").textContent = change(total[key], was(key), rate);
    }
    $("kpi-visits").textContent = count(total.visits);
    $("kpi-visitors").textContent = count(total.visitors);
    $("kpi-players").textContent = count(total.players);
    $("kpi-conversion").textContent = percent(total.conversion);
    $("kpi-conversion").classList.remove("over");
    if (total.conversion > 1) over($("kpi-conversion"));
    $("kpi-direct").textContent = count(total.direct);
    $("kpi-d1").textContent = percent(total.d1);
    $("kpi-d7").textContent = percent(total.d7);
    shown = report;
    drawChart(report);
    drawCampaigns();
    const firstOpens = report.conversions.filter((row) => row.event === FIRST_OPEN);
    const name = (value) => value || "(unknown)";
    split("storefronts", firstOpens, "storefront", (row) => row.users, name);
    split("platforms", firstOpens, "platform", (row) => row.users, name);
    split("devices", report.traffic, "device", (row) => row.visits, name);
    // Countries only where a country database resolves them (privacy.geoip_db).
    const located = report.traffic.some((row) => row.country) || firstOpens.some((row) => row.country);
    $("countries-card").hidden = !located;
    $("countries-hint").hidden = located;
    if (located) split("countries", firstOpens, "country", (row) => row.users, countryName);
    breakdown("sources", report.sources || [], "referrer_host");
    breakdown("pages", report.pages || [], "page");
    $("report").hidden = false;
    document.body.dataset.loaded = report.from + ".." + report.to;
  }

  // A table as CSV, cell for cell as shown (the bars' column left out), made in the browser:
  // nothing new leaves the server. Cells a spreadsheet would run as formulas are defused.
  function csvOf(id) {
    const quote = (text) => {
      const safe = /^[=+\-@\t\r]/.test(text) ? "'" + text : text;
      return /[",\n]/.test(safe) ? '"' + safe.replace(/"/g, '""') + '"' : safe;
    };
    return Array.from($(id).rows)
      .map((row) => Array.from(row.cells)
        .filter((cell) => !cell.classList.contains("share"))
        .map((cell) => quote(cell.textContent.trim())).join(","))
      .join("\n") + "\n";
  }

  function downloadCsv(id) {
    const link = $("csv-link");
    link.href = "data:text/csv;charset=utf-8," + encodeURIComponent(csvOf(id));
    link.download = id + "-" + $("from").value + "-" + $("to").value + ".csv";
    link.click();
  }

  function setRange(days) {
    const to = utcDay(new Date());
    $("to").value = to;
    $("from").value = daysBefore(to, days - 1);
  }

  function start() {
    setRange(14);
    $("login").addEventListener("submit", (event) => {
      event.preventDefault();
      token = $("token").value.trim();
      $("token").value = "";
      if (token) load(false);
    });
    $("range").addEventListener("submit", (event) => {
      event.preventDefault();
      load(false);
    });
    $("game").addEventListener("change", () => load(false));
    filterFromQuery();
    $("filter-clear").addEventListener("click", () => setFilter(null));
    for (const button of document.querySelectorAll("button.csv")) {
      button.addEventListener("click", () => downloadCsv(button.dataset.table));
    }
    for (const button of document.querySelectorAll("[data-days]")) {
      button.addEventListener("click", () => {
        setRange(Number(button.dataset.days));
        load(false);
      });
    }
    for (const header of $("campaigns").tHead.rows[0].cells) {
      if (!header.dataset.key) continue;
      header.tabIndex = 0;
      const sortBy = () => {
        const key = header.dataset.key;
        sortDescending = key === sortKey ? !sortDescending : key !== "label";
        sortKey = key;
        drawCampaigns();
      };
      header.addEventListener("click", sortBy);
      header.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          sortBy();
        }
      });
    }
    window.addEventListener("resize", () => {
      clearTimeout(resizing);
      resizing = setTimeout(() => {
        if (shown && !$("report").hidden) drawChart(shown);
      }, 100);
    });
    // A link with another token, opened in this tab, takes effect at once.
    window.addEventListener("hashchange", () => {
      const found = tokenFromFragment();
      if (found) {
        token = found;
        load(false);
      }
    });
    token = tokenFromFragment();
    if (token) {
      load(false);
    } else {
      showLogin();
    }
  }

  start();
})();

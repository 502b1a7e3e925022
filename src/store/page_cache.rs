//! Store: SQLite's own page cache, with the one key that made every commit walk all of it
//! moved out of the way. The crate's only unsafe code (issue 18).
//!
//! When SQLite rebalances B-tree pages it puts the new siblings in page-number order, swapping
//! two pages through a temporary page number: the "pending byte" page, 262,145 with 4 KiB
//! pages, past the end of any database under 1 GiB. The default cache (pcache1) keeps the
//! largest page number it has held, and every commit drops the pages past the database's end;
//! when that largest number lies further past the end than the cache has hash slots, it walks
//! every slot and every page. So after any swap, and mid-tree inserts swap all the time, the
//! next commit walked the whole cache: milliseconds with the writer's cache full, 45% of the
//! writer's time on a store of 1 M visits and 28% of it for game opens.
//!
//! The cache here is the default one, called through its own methods, with that temporary
//! page number stored under key 0, which SQLite never uses for a page. The largest key then
//! stays inside the database, and a commit's drop has little or nothing to walk.
//! Everything else passes through unchanged, and SQLite sees the same pages under the same
//! numbers.
//!
//! Why unsafe: SQLite takes another page cache only as a C struct of function pointers
//! (`sqlite3_config` with `SQLITE_CONFIG_PCACHE2`), which rusqlite does not wrap. So the
//! methods here are `extern "C"` functions over SQLite's raw pointers, and the configuration
//! is called through the FFI. The gain, from docs/benchmarks.md ("What was tried", the page
//! cache's row): on the grown store of 1 M visits, the writer went from 98 to 50-53 µs per
//! visit and the collector from 6,713-6,860 to 9,538-9,886 requests/s; on `/measure`, the
//! writer went from 199 to 163 µs per event. The shares of the walk above (45%, 28%) are from
//! the commit that added it, d335553.
//!
//! To remove it, should SQLite's default cache stop walking past the database's end: delete
//! this module (with its `mod` line in store/mod.rs, its re-export in testkit.rs and
//! tests/page_cache.rs) and the `install` call in store/sqlite.rs. SQLite's default page cache
//! is the fallback already: it is the one in use whenever `install` fails.
#![allow(unsafe_code)]

use std::ffi::{c_int, c_uint};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::ffi;

/// The file offset of SQLite's pending byte (1 GiB; only SQLite's own tests move it).
const PENDING_BYTE: u32 = 0x4000_0000;

/// Why the cache is SQLite's unchanged one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotInstalled {
    /// SQLite was in use before the store opened its first database; the result code of
    /// `sqlite3_config`.
    TooLate(c_int),
    /// SQLite gave no default cache to call.
    NoDefault,
}

impl std::fmt::Display for NotInstalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotInstalled::TooLate(code) => {
                write!(
                    f,
                    "SQLite was already in use (sqlite3_config answered {code})"
                )
            }
            NotInstalled::NoDefault => write!(f, "SQLite has no default page cache"),
        }
    }
}

/// Puts this cache in place of SQLite's default one, once per process. It takes effect only
/// before SQLite's first use in the process (SQLite reads its configuration when it starts),
/// so the store calls it before it opens any database.
pub fn install() -> Result<(), NotInstalled> {
    static OUTCOME: OnceLock<Result<(), NotInstalled>> = OnceLock::new();
    // SAFETY: `sqlite3_config` may not run while SQLite is in use on another thread; the
    // store calls this before its first connection, and SQLite refuses it (SQLITE_MISUSE)
    // once started. (Should another thread start SQLite at that moment, as unit tests that
    // open their own connections may, it reads the same `xInit` and `pArg` from either
    // struct, and no cache exists before it has started.) Both calls get a valid methods
    // struct of the type they expect.
    *OUTCOME.get_or_init(|| unsafe { install_once() })
}

/// How many times SQLite parked a page under the temporary page number since the process
/// started: each one, with SQLite's default cache, made the next commit walk the whole cache.
pub fn keys_moved() -> u64 {
    KEYS_MOVED.load(Ordering::Relaxed)
}

static KEYS_MOVED: AtomicU64 = AtomicU64::new(0);

/// SQLite's default methods, which do the work.
struct DefaultMethods(ffi::sqlite3_pcache_methods2);

// SAFETY: the struct holds C function pointers, which any thread may call (SQLite serialises
// calls on one cache itself), and `pArg`, which is only ever handed back to them.
unsafe impl Send for DefaultMethods {}
// SAFETY: it is never changed once set (a `OnceLock` holds it), so sharing it only shares
// those pointers, which any thread may call, as above.
unsafe impl Sync for DefaultMethods {}

static DEFAULT: OnceLock<DefaultMethods> = OnceLock::new();

/// Reads SQLite's default methods, keeps them in `DEFAULT`, and configures SQLite with ours,
/// which call them.
///
/// # Safety
///
/// No other thread may be using SQLite, or configuring it, during the call: `sqlite3_config`
/// is not thread-safe. Before SQLite has started nothing uses it; once started, SQLite
/// refuses the configuration (`SQLITE_MISUSE`, answered as `TooLate`). `install` calls it once
/// per process, from a `OnceLock`, before the store opens its first connection.
unsafe fn install_once() -> Result<(), NotInstalled> {
    let mut default = ffi::sqlite3_pcache_methods2 {
        iVersion: 0,
        pArg: std::ptr::null_mut(),
        xInit: None,
        xShutdown: None,
        xCreate: None,
        xCachesize: None,
        xPagecount: None,
        xFetch: None,
        xUnpin: None,
        xRekey: None,
        xTruncate: None,
        xDestroy: None,
        xShrink: None,
    };
    // SAFETY: GETPCACHE2 takes a pointer to a `sqlite3_pcache_methods2` and writes the current
    // methods into it; `default` is one, alive and writable for the call. The caller ensures
    // nothing else uses SQLite meanwhile.
    let code = unsafe {
        ffi::sqlite3_config(
            ffi::SQLITE_CONFIG_GETPCACHE2,
            &mut default as *mut ffi::sqlite3_pcache_methods2,
        )
    };
    if code != ffi::SQLITE_OK {
        return Err(NotInstalled::TooLate(code));
    }
    let complete = default.xCreate.is_some()
        && default.xCachesize.is_some()
        && default.xPagecount.is_some()
        && default.xFetch.is_some()
        && default.xUnpin.is_some()
        && default.xRekey.is_some()
        && default.xTruncate.is_some()
        && default.xDestroy.is_some();
    if !complete {
        return Err(NotInstalled::NoDefault);
    }
    let ours = ffi::sqlite3_pcache_methods2 {
        iVersion: default.iVersion,
        pArg: default.pArg,
        // Global set-up and tear-down take `pArg` and no cache: the default's own.
        xInit: default.xInit,
        xShutdown: default.xShutdown,
        xCreate: Some(create),
        xCachesize: Some(cache_size),
        xPagecount: Some(page_count),
        xFetch: Some(fetch),
        xUnpin: Some(unpin),
        xRekey: Some(rekey),
        xTruncate: Some(truncate),
        xDestroy: Some(destroy),
        xShrink: Some(shrink),
    };
    let _ = DEFAULT.set(DefaultMethods(default));
    // SAFETY: PCACHE2 takes a pointer to a `sqlite3_pcache_methods2` and copies it before it
    // returns; `ours` is one, alive for the call. Every method in it is SQLite's own or defined
    // below with the signature SQLite expects, and the ones below find the default methods
    // they call in `DEFAULT`, set above.
    let code = unsafe {
        ffi::sqlite3_config(
            ffi::SQLITE_CONFIG_PCACHE2,
            &ours as *const ffi::sqlite3_pcache_methods2,
        )
    };
    if code != ffi::SQLITE_OK {
        return Err(NotInstalled::TooLate(code));
    }
    Ok(())
}

/// One cache: the default's, and the page number it stores under key 0.
struct Cache {
    inner: *mut ffi::sqlite3_pcache,
    temporary: c_uint,
}

impl Cache {
    /// The key of page number `page` in the default cache.
    fn key(&self, page: c_uint) -> c_uint {
        if page == self.temporary { 0 } else { page }
    }
}

fn methods() -> &'static ffi::sqlite3_pcache_methods2 {
    match DEFAULT.get() {
        Some(DefaultMethods(methods)) => methods,
        // Only `install_once` hands SQLite these functions, after it set the methods.
        None => unreachable!("the page cache is in use before it was installed"),
    }
}

/// Our cache behind the handle SQLite passes to the methods below.
///
/// # Safety
///
/// `cache` must be a pointer that `create` returned and `destroy` has not yet freed, and the
/// reference must not outlive it. SQLite upholds this for the methods below: it passes each of
/// them only a cache that `create` returned and it has not destroyed, and the pages the default
/// cache gave for it.
unsafe fn cache<'a>(cache: *mut ffi::sqlite3_pcache) -> &'a Cache {
    // SAFETY: by the caller's promise, `cache` is a `Box<Cache>` made by `create` and not yet
    // freed; nothing writes to a `Cache` after `create`, so a shared reference is sound.
    unsafe { &*cache.cast::<Cache>() }
}

/// SQLite's `xCreate`: the default's cache, wrapped with its temporary page number.
///
/// # Safety
///
/// Called by SQLite only, with the arguments of `xCreate`, after `install_once` configured it.
unsafe extern "C" fn create(
    page_size: c_int,
    extra: c_int,
    purgeable: c_int,
) -> *mut ffi::sqlite3_pcache {
    let Some(create) = methods().xCreate else {
        return std::ptr::null_mut();
    };
    // SAFETY: the default's `xCreate`, given SQLite's own arguments for it unchanged.
    let inner = unsafe { create(page_size, extra, purgeable) };
    if inner.is_null() {
        return inner;
    }
    // A new page size makes a new cache, so one cache has one temporary number.
    let temporary = u32::try_from(page_size)
        .ok()
        .filter(|&size| size > 0)
        .map_or(0, |size| PENDING_BYTE / size + 1);
    Box::into_raw(Box::new(Cache { inner, temporary })).cast()
}

/// SQLite's `xCachesize`, passed through.
///
/// # Safety
///
/// Called by SQLite only: `p` is a cache that `create` returned and SQLite has not destroyed
/// (see [`cache`]).
unsafe extern "C" fn cache_size(p: *mut ffi::sqlite3_pcache, pages: c_int) {
    if let Some(f) = methods().xCachesize {
        // SAFETY: `p` is live (the caller's promise), and its `inner` is the default's cache,
        // which the default's method expects.
        unsafe { f(cache(p).inner, pages) }
    }
}

/// SQLite's `xPagecount`, passed through.
///
/// # Safety
///
/// Called by SQLite only: `p` is a cache that `create` returned and SQLite has not destroyed
/// (see [`cache`]).
unsafe extern "C" fn page_count(p: *mut ffi::sqlite3_pcache) -> c_int {
    match methods().xPagecount {
        // SAFETY: `p` is live (the caller's promise), and its `inner` is the default's cache,
        // which the default's method expects.
        Some(f) => unsafe { f(cache(p).inner) },
        None => 0,
    }
}

/// SQLite's `xFetch`, with the temporary page number looked up under key 0.
///
/// # Safety
///
/// Called by SQLite only: `p` is a cache that `create` returned and SQLite has not destroyed
/// (see [`cache`]).
unsafe extern "C" fn fetch(
    p: *mut ffi::sqlite3_pcache,
    page: c_uint,
    create: c_int,
) -> *mut ffi::sqlite3_pcache_page {
    // SAFETY: `p` is live for this call (the caller's promise).
    let cache = unsafe { cache(p) };
    match methods().xFetch {
        // SAFETY: `inner` is the default's cache, which the default's method expects; any key
        // is valid to it (SQLite itself never uses 0).
        Some(f) => unsafe { f(cache.inner, cache.key(page), create) },
        None => std::ptr::null_mut(),
    }
}

/// SQLite's `xUnpin`, passed through.
///
/// # Safety
///
/// Called by SQLite only: `p` is a cache that `create` returned and SQLite has not destroyed
/// (see [`cache`]), and `page` one the default cache gave for it.
unsafe extern "C" fn unpin(
    p: *mut ffi::sqlite3_pcache,
    page: *mut ffi::sqlite3_pcache_page,
    discard: c_int,
) {
    if let Some(f) = methods().xUnpin {
        // SAFETY: `p` is live (the caller's promise); its `inner` and `page` are the default
        // cache's and one of its pages, as the default's method expects.
        unsafe { f(cache(p).inner, page, discard) }
    }
}

/// SQLite's `xRekey`, with the temporary page number stored under key 0.
///
/// # Safety
///
/// Called by SQLite only: `p` is a cache that `create` returned and SQLite has not destroyed
/// (see [`cache`]), and `page` one the default cache gave for it.
unsafe extern "C" fn rekey(
    p: *mut ffi::sqlite3_pcache,
    page: *mut ffi::sqlite3_pcache_page,
    old: c_uint,
    new: c_uint,
) {
    // SAFETY: `p` is live for this call (the caller's promise).
    let cache = unsafe { cache(p) };
    if new == cache.temporary {
        KEYS_MOVED.fetch_add(1, Ordering::Relaxed);
    }
    if let Some(f) = methods().xRekey {
        // SAFETY: `inner` and `page` are the default cache's and one of its pages, as the
        // default's method expects. The keys map page numbers one to one (the temporary number
        // to 0, which SQLite never uses), so the default cache sees a consistent renumbering.
        unsafe { f(cache.inner, page, cache.key(old), cache.key(new)) }
    }
}

/// Drops the pages numbered `limit` and up. A page under key 0 stays, which is right: SQLite
/// parks a page there only in the middle of a swap, never across a truncation.
///
/// # Safety
///
/// Called by SQLite only: `p` is a cache that `create` returned and SQLite has not destroyed
/// (see [`cache`]).
unsafe extern "C" fn truncate(p: *mut ffi::sqlite3_pcache, limit: c_uint) {
    if let Some(f) = methods().xTruncate {
        // SAFETY: `p` is live (the caller's promise), and its `inner` is the default's cache,
        // which the default's method expects.
        unsafe { f(cache(p).inner, limit) }
    }
}

/// SQLite's `xDestroy`: the default's cache, then ours.
///
/// # Safety
///
/// Called by SQLite only: `p` is a cache that `create` returned and SQLite has not destroyed
/// (see [`cache`]); SQLite calls no method on it afterwards.
unsafe extern "C" fn destroy(p: *mut ffi::sqlite3_pcache) {
    // SAFETY: `p` came from `Box::into_raw` in `create`, and SQLite destroys a cache once and
    // uses it no more, so the box is taken back once and nothing refers to it after.
    let cache = unsafe { Box::from_raw(p.cast::<Cache>()) };
    if let Some(f) = methods().xDestroy {
        // SAFETY: `inner` is the default's cache, not yet destroyed, as the default's method
        // expects; this is its one destruction.
        unsafe { f(cache.inner) }
    }
}

/// SQLite's `xShrink`, passed through.
///
/// # Safety
///
/// Called by SQLite only: `p` is a cache that `create` returned and SQLite has not destroyed
/// (see [`cache`]).
unsafe extern "C" fn shrink(p: *mut ffi::sqlite3_pcache) {
    if let Some(f) = methods().xShrink {
        // SAFETY: `p` is live (the caller's promise), and its `inner` is the default's cache,
        // which the default's method expects.
        unsafe { f(cache(p).inner) }
    }
}

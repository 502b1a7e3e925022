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
unsafe impl Sync for DefaultMethods {}

static DEFAULT: OnceLock<DefaultMethods> = OnceLock::new();

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
    // SAFETY: GETPCACHE2 writes the current methods into the struct it is given.
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
    // SAFETY: PCACHE2 copies the struct; every method in it is defined below or SQLite's.
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

/// SAFETY (every method below): SQLite only passes a cache that `create` returned and has not
/// destroyed, and the pages the default cache gave for it.
unsafe fn cache<'a>(cache: *mut ffi::sqlite3_pcache) -> &'a Cache {
    unsafe { &*cache.cast::<Cache>() }
}

unsafe extern "C" fn create(
    page_size: c_int,
    extra: c_int,
    purgeable: c_int,
) -> *mut ffi::sqlite3_pcache {
    let Some(create) = methods().xCreate else {
        return std::ptr::null_mut();
    };
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

unsafe extern "C" fn cache_size(p: *mut ffi::sqlite3_pcache, pages: c_int) {
    if let Some(f) = methods().xCachesize {
        unsafe { f(cache(p).inner, pages) }
    }
}

unsafe extern "C" fn page_count(p: *mut ffi::sqlite3_pcache) -> c_int {
    match methods().xPagecount {
        Some(f) => unsafe { f(cache(p).inner) },
        None => 0,
    }
}

unsafe extern "C" fn fetch(
    p: *mut ffi::sqlite3_pcache,
    page: c_uint,
    create: c_int,
) -> *mut ffi::sqlite3_pcache_page {
    let cache = unsafe { cache(p) };
    match methods().xFetch {
        Some(f) => unsafe { f(cache.inner, cache.key(page), create) },
        None => std::ptr::null_mut(),
    }
}

unsafe extern "C" fn unpin(
    p: *mut ffi::sqlite3_pcache,
    page: *mut ffi::sqlite3_pcache_page,
    discard: c_int,
) {
    if let Some(f) = methods().xUnpin {
        unsafe { f(cache(p).inner, page, discard) }
    }
}

unsafe extern "C" fn rekey(
    p: *mut ffi::sqlite3_pcache,
    page: *mut ffi::sqlite3_pcache_page,
    old: c_uint,
    new: c_uint,
) {
    let cache = unsafe { cache(p) };
    if new == cache.temporary {
        KEYS_MOVED.fetch_add(1, Ordering::Relaxed);
    }
    if let Some(f) = methods().xRekey {
        unsafe { f(cache.inner, page, cache.key(old), cache.key(new)) }
    }
}

/// Drops the pages numbered `limit` and up. A page under key 0 stays, which is right: SQLite
/// parks a page there only in the middle of a swap, never across a truncation.
unsafe extern "C" fn truncate(p: *mut ffi::sqlite3_pcache, limit: c_uint) {
    if let Some(f) = methods().xTruncate {
        unsafe { f(cache(p).inner, limit) }
    }
}

unsafe extern "C" fn destroy(p: *mut ffi::sqlite3_pcache) {
    // SAFETY: `p` came from `Box::into_raw` in `create`, and SQLite destroys a cache once.
    let cache = unsafe { Box::from_raw(p.cast::<Cache>()) };
    if let Some(f) = methods().xDestroy {
        unsafe { f(cache.inner) }
    }
}

unsafe extern "C" fn shrink(p: *mut ffi::sqlite3_pcache) {
    if let Some(f) = methods().xShrink {
        unsafe { f(cache(p).inner) }
    }
}

//! The `wasmesh` binary's global allocator: mimalloc, called the way the proxy's allocations
//! are cheapest, and tuned to give freed memory back. The one crate of the proxy with
//! `unsafe` code, since an allocator is made of it.

/// mimalloc, asked for plain `mi_malloc` when every mimalloc block is aligned enough (8 bytes,
/// the word size). The `mimalloc` crate always calls `mi_malloc_aligned`, whose fast path
/// covers blocks under 1 KiB only: above that it over-allocates and marks the page as holding
/// interior pointers, which slows its frees too. A header map's buckets are such a block,
/// allocated several times per request.
#[derive(Debug, Clone, Copy)]
pub struct Allocator;

/// The alignment of every block mimalloc hands out.
const WORD: usize = std::mem::size_of::<usize>();

// SAFETY: each call goes to mimalloc, which returns blocks aligned to at least `WORD` from its
// plain functions and to `layout.align()` from its aligned ones; `mi_free` frees either kind.
unsafe impl std::alloc::GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if layout.align() <= WORD {
            // SAFETY: as above.
            unsafe { libmimalloc_sys::mi_malloc(layout.size()).cast() }
        } else {
            // SAFETY: as above.
            unsafe { mimalloc::MiMalloc.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        if layout.align() <= WORD {
            // SAFETY: as above.
            unsafe { libmimalloc_sys::mi_zalloc(layout.size()).cast() }
        } else {
            // SAFETY: as above.
            unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: `ptr` came from this allocator.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= WORD {
            // SAFETY: `ptr` came from this allocator; the new block keeps the word alignment.
            unsafe { libmimalloc_sys::mi_realloc(ptr.cast(), new_size).cast() }
        } else {
            // SAFETY: as above.
            unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
        }
    }
}

/// mimalloc's `purge_delay` option.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Has mimalloc give freed memory back to the system as soon as a whole page of it is free,
/// unless `MIMALLOC_PURGE_DELAY` says otherwise. mimalloc's default delay is only acted on at
/// a later allocation by the same thread, so the buffers of connections that went quiet
/// (freed when they park) could stay resident indefinitely on a thread with little else to
/// do. Under steady load pages rarely empty, so this costs next to no system calls.
pub fn return_freed_memory_promptly() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's options, which it reads atomically; any value is valid.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}

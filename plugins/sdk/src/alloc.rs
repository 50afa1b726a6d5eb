//! A size-class allocator for plugins (feature `allocator`, on by default): small blocks are
//! kept on a free list per power-of-two size and reused, so the allocations of every hook call
//! (its packed head, the strings of its decision, freed by `post-return`) cost a few
//! instructions each instead of a trip through dlmalloc, which was most of a hook's own time.
//! Larger or over-aligned blocks go to the system allocator. Blocks on a free list are never
//! given back: a plugin's memory is bounded by its peak use, and its instance is replaced
//! after any trap.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::ptr;

/// Size classes 16, 32, …, 1024 bytes.
const CLASSES: usize = 7;
const MIN_SIZE: usize = 16;
const MAX_SIZE: usize = MIN_SIZE << (CLASSES - 1);
/// Alignment every class block has; stricter requests go to the system allocator.
const ALIGN: usize = 16;

/// Free lists by size class, over a backing allocator.
pub struct SizeClasses<A: GlobalAlloc = System> {
    /// Head of each class's free list; a free block's first word points to the next.
    free: UnsafeCell<[*mut u8; CLASSES]>,
    backing: A,
}

// SAFETY: the global instance only exists on wasm32 components, which have one thread; tests
// use their own instance from one thread.
unsafe impl<A: GlobalAlloc + Sync> Sync for SizeClasses<A> {}

impl<A: GlobalAlloc> SizeClasses<A> {
    /// Empty free lists over `backing`.
    pub const fn new(backing: A) -> Self {
        Self { free: UnsafeCell::new([ptr::null_mut(); CLASSES]), backing }
    }

    /// The class of `layout` and its block size, or `None` when the backing allocator serves it.
    fn class(layout: Layout) -> Option<(usize, usize)> {
        if layout.size() > MAX_SIZE || layout.align() > ALIGN {
            return None;
        }
        let size = layout.size().max(MIN_SIZE).next_power_of_two();
        Some(((size / MIN_SIZE).trailing_zeros() as usize, size))
    }
}

// SAFETY: a class block is `size` bytes of the backing allocator's, aligned to 16, handed out
// once until freed; every other layout is the backing allocator's own.
unsafe impl<A: GlobalAlloc> GlobalAlloc for SizeClasses<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some((class, size)) = Self::class(layout) else {
            // SAFETY: the caller's layout contract passes through.
            return unsafe { self.backing.alloc(layout) };
        };
        // SAFETY: single-threaded (see `Sync`); a free block's first word holds the next one.
        unsafe {
            let free = &mut *self.free.get();
            let head = free[class];
            if head.is_null() {
                return self.backing.alloc(Layout::from_size_align_unchecked(size, ALIGN));
            }
            free[class] = head.cast::<*mut u8>().read();
            head
        }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        let Some((class, _)) = Self::class(layout) else {
            // SAFETY: `block` came from the backing allocator with this layout.
            return unsafe { self.backing.dealloc(block, layout) };
        };
        // SAFETY: `block` is a whole class block (at least 16 bytes, 16-aligned) no longer in use.
        unsafe {
            let free = &mut *self.free.get();
            block.cast::<*mut u8>().write(free[class]);
            free[class] = block;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_blocks_are_reused_by_their_class_only() {
        let heap = SizeClasses::new(System);
        let small = Layout::from_size_align(20, 4).expect("layout");
        let other = Layout::from_size_align(100, 8).expect("layout");
        // SAFETY: each block is written within its layout and freed once, with that layout.
        unsafe {
            let a = heap.alloc(small);
            a.write_bytes(0xab, 20);
            heap.dealloc(a, small);
            let b = heap.alloc(other);
            assert_ne!(a, b, "a 128-byte class does not take a 32-byte block");
            let c = heap.alloc(Layout::from_size_align(32, 16).expect("layout"));
            assert_eq!(a, c, "the 32-byte class reuses the freed block");
            assert_eq!(c as usize % ALIGN, 0);
            heap.dealloc(b, other);
            heap.dealloc(c, Layout::from_size_align(32, 16).expect("layout"));
        }
    }

    #[test]
    fn large_and_over_aligned_blocks_go_to_the_backing_allocator() {
        assert_eq!(SizeClasses::<System>::class(Layout::from_size_align(1024, 8).expect("layout")), Some((6, 1024)));
        assert_eq!(SizeClasses::<System>::class(Layout::from_size_align(1025, 8).expect("layout")), None);
        assert_eq!(SizeClasses::<System>::class(Layout::from_size_align(64, 32).expect("layout")), None);
        assert_eq!(SizeClasses::<System>::class(Layout::from_size_align(0, 1).expect("layout")), Some((0, 16)));
        let heap = SizeClasses::new(System);
        let big = Layout::from_size_align(4096, 8).expect("layout");
        // SAFETY: the block is written within its layout and freed once, with that layout.
        unsafe {
            let p = heap.alloc(big);
            p.write_bytes(1, 4096);
            heap.dealloc(p, big);
        }
    }
}

//! BPF array maps created with BPF_F_MMAPABLE, mapped into this process: a whole generation of
//! the lookup table is written with memory copies instead of one syscall per element.

use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd as _, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

/// The values of a mmapable array map, shared with the kernel (and with the XDP program, which
/// may be reading any of them while they are written: callers write only what no packet reads,
/// or single u64 values with [`MappedArray::store`]).
pub struct MappedArray<T> {
    base: NonNull<u8>,
    bytes: usize,
    entries: u32,
    _values: PhantomData<T>,
}

// SAFETY: the mapping is plain shared memory owned by this value; access goes through &self
// methods that copy values in and out.
unsafe impl<T: Send> Send for MappedArray<T> {}
// SAFETY: as above.
unsafe impl<T: Sync> Sync for MappedArray<T> {}

impl<T: aya::Pod> MappedArray<T> {
    /// Maps the `entries` values of the array map `fd`. The kernel stores values 8-byte aligned,
    /// so `T` must be a multiple of 8 bytes (then values sit back to back).
    pub fn new(fd: BorrowedFd<'_>, entries: u32) -> io::Result<Self> {
        if !size_of::<T>().is_multiple_of(8) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "mapped array values must be a multiple of 8 bytes",
            ));
        }
        let bytes = size_of::<T>() * entries as usize;
        // SAFETY: a fresh shared mapping of the map's value area; the kernel checks the size
        // against the map and the flags against BPF_F_MMAPABLE.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(base.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        Ok(Self {
            base,
            bytes,
            entries,
            _values: PhantomData,
        })
    }

    pub fn len(&self) -> u32 {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// The value at `index`, if in bounds.
    pub fn get(&self, index: u32) -> Option<T> {
        if index >= self.entries {
            return None;
        }
        // SAFETY: in bounds and aligned (values are 8-byte multiples from a page-aligned base);
        // any bit pattern is a valid `T` (Pod).
        Some(unsafe {
            self.base
                .as_ptr()
                .add(index as usize * size_of::<T>())
                .cast::<T>()
                .read_volatile()
        })
    }

    /// Copies `values` to `[first, first + values.len())`; false (nothing written) when that is
    /// out of bounds.
    pub fn write(&self, first: u32, values: &[T]) -> bool {
        let Some(end) = (first as usize).checked_add(values.len()) else {
            return false;
        };
        if end > self.entries as usize {
            return false;
        }
        // SAFETY: in bounds (checked), values are Pod, the source is a distinct allocation.
        unsafe {
            std::ptr::copy_nonoverlapping(
                values.as_ptr(),
                self.base
                    .as_ptr()
                    .add(first as usize * size_of::<T>())
                    .cast::<T>(),
                values.len(),
            );
        }
        true
    }
}

impl MappedArray<u64> {
    /// Writes one value atomically (a packet reading it sees the old or the new value); false
    /// when out of bounds.
    pub fn store(&self, index: u32, value: u64) -> bool {
        if index >= self.entries {
            return false;
        }
        // SAFETY: in bounds, 8-byte aligned, and only accessed atomically or by copies of whole
        // generations that no packet reads.
        let atomic = unsafe {
            AtomicU64::from_ptr(self.base.as_ptr().add(index as usize * 8).cast::<u64>())
        };
        atomic.store(value, Ordering::Release);
        true
    }
}

impl<T> Drop for MappedArray<T> {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped; nothing borrows it past `self`.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.bytes);
        }
    }
}

//! GEM handles of client dma-bufs imported into the KMS device, counted.
//!
//! A PRIME import (`PRIME_FD_TO_HANDLE`) of a dma-buf that the device file already
//! imported returns the handle it returned before: the kernel keeps one handle per
//! dma-buf and file. Two `wl_buffer`s made from one dma-buf (a client passing the same or
//! a dup'd fd twice), or two planes of one buffer on one dma-buf, therefore share a
//! handle, and a `GEM_CLOSE` by one of them takes it from the other: the second close
//! fails (`EINVAL`), or closes whatever the kernel gave that handle number to meanwhile
//! (another client's import).
//!
//! [`GemHandles`] counts the users of each handle it imported; a [`GemHandle`] is one
//! use, and the handle is closed when the last use is dropped. Owner: the table closes
//! every handle it imported, exactly once; handles the device file has for other reasons
//! (our dumb buffers, GETFB2 during a screenshot) are never imported through it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::rc::Rc;

use smithay::backend::drm::DrmDeviceFd;
use smithay::reexports::drm::{buffer::Handle, control::Device as _};

/// Uses of each handle number.
#[derive(Debug, Default)]
struct UseCounts(HashMap<u32, usize>);

impl UseCounts {
    /// One more use of `handle`; returns the uses now.
    fn acquire(&mut self, handle: u32) -> usize {
        let n = self.0.entry(handle).or_insert(0);
        *n += 1;
        *n
    }

    /// One use of `handle` less; true when that was the last (the handle must be closed
    /// now). A handle not counted here is never reported as last.
    fn release(&mut self, handle: u32) -> bool {
        match self.0.get_mut(&handle) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                self.0.remove(&handle);
                true
            }
            None => false,
        }
    }

    fn uses(&self, handle: u32) -> usize {
        self.0.get(&handle).copied().unwrap_or(0)
    }
}

#[derive(Debug)]
struct Table {
    dev: DrmDeviceFd,
    uses: UseCounts,
}

/// The imported client GEM handles of one DRM device file (cheap to clone: shared).
#[derive(Debug, Clone)]
pub struct GemHandles(Rc<RefCell<Table>>);

/// One use of an imported GEM handle; the handle is closed when its last use is dropped.
#[derive(Debug)]
#[must_use = "dropping the last use closes the GEM handle"]
pub struct GemHandle {
    handle: Handle,
    table: Rc<RefCell<Table>>,
}

impl GemHandles {
    /// A table for `dev` (which it keeps open while any handle is in use).
    pub fn new(dev: DrmDeviceFd) -> Self {
        Self(Rc::new(RefCell::new(Table {
            dev,
            uses: UseCounts::default(),
        })))
    }

    /// Whether this table is for the device file `dev`.
    pub fn is_for(&self, dev: &DrmDeviceFd) -> bool {
        self.0.borrow().dev.as_fd().as_raw_fd() == dev.as_fd().as_raw_fd()
    }

    /// PRIME import of the dma-buf `fd` (borrowed; the kernel takes its own reference):
    /// one use of its GEM handle.
    pub fn import(&self, fd: BorrowedFd<'_>) -> std::io::Result<GemHandle> {
        let mut table = self.0.borrow_mut();
        let handle = table.dev.prime_fd_to_buffer(fd)?;
        let uses = table.uses.acquire(handle.into());
        tracing::debug!(
            handle = u32::from(handle),
            uses,
            "client dma-buf imported (PRIME); uses > 1: a GEM handle shared with another import"
        );
        Ok(GemHandle {
            handle,
            table: self.0.clone(),
        })
    }

    /// How many uses `handle` has now (0: not imported through this table).
    pub fn uses(&self, handle: Handle) -> usize {
        self.0.borrow().uses.uses(handle.into())
    }
}

impl GemHandle {
    /// The GEM handle (valid while this use lives).
    pub fn handle(&self) -> Handle {
        self.handle
    }
}

impl Drop for GemHandle {
    fn drop(&mut self) {
        let mut table = self.table.borrow_mut();
        if table.uses.release(self.handle.into()) {
            if let Err(err) = table.dev.close_buffer(self.handle) {
                tracing::warn!(
                    %err,
                    handle = u32::from(self.handle),
                    "closing the GEM handle of a client dma-buf failed"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::UseCounts;

    #[test]
    fn a_handle_is_last_released_once_after_as_many_releases_as_acquires() {
        let mut u = UseCounts::default();
        assert_eq!(u.acquire(7), 1);
        assert_eq!(u.acquire(7), 2, "a second import of the same dma-buf");
        assert_eq!(u.acquire(9), 1);
        assert!(!u.release(7), "the other import still uses handle 7");
        assert_eq!(u.uses(7), 1);
        assert!(u.release(7), "the last use closes it");
        assert_eq!(u.uses(7), 0);
        assert!(!u.release(7), "never closed twice");
        assert!(u.release(9));
        // A handle number the kernel hands out again after the close is a new handle.
        assert_eq!(u.acquire(7), 1);
        assert!(u.release(7));
    }
}

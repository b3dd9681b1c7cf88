//! Commit-time validation of both explicit-sync protocols, as pure functions.
//!
//! The pre-commit hook gathers what the client set up for the commit (the pending buffer
//! and the pending points/fences) and asks these functions which protocol error, if any,
//! the commit deserves. Keeping them free of Wayland objects makes the rules testable on
//! the host.
//!
//! ```
//! use syncbridge_protocols::commit_check::{check_syncobj_commit, PendingBuffer, SyncobjCommitError};
//! // acquire 5 and release 5 on the same timeline (identity 1): conflicting points.
//! let err = check_syncobj_commit(PendingBuffer::Dmabuf, Some((1, 5)), Some((1, 5))).unwrap_err();
//! assert_eq!(err, SyncobjCommitError::ConflictingPoints { acquire: 5, release: 5 });
//! // on different timelines any values are fine
//! assert!(check_syncobj_commit(PendingBuffer::Dmabuf, Some((1, 5)), Some((2, 1))).is_ok());
//! ```

use smithay::reexports::wayland_protocols::wp::linux_drm_syncobj::v1::server::wp_linux_drm_syncobj_surface_v1;
use smithay::reexports::wayland_protocols::wp::linux_explicit_synchronization::zv1::server::zwp_linux_surface_synchronization_v1;

/// What the commit does with the surface's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingBuffer {
    /// No `wl_surface.attach` in this commit cycle.
    Unchanged,
    /// `wl_surface.attach(NULL)`.
    Removed,
    /// A new dma-buf (linux-dmabuf) buffer.
    Dmabuf,
    /// A new buffer of another kind (wl_shm, single-pixel, ...).
    Other,
}

impl PendingBuffer {
    /// A non-null buffer is attached in this commit.
    pub fn is_new(self) -> bool {
        matches!(self, PendingBuffer::Dmabuf | PendingBuffer::Other)
    }
}

/// Why a linux-drm-syncobj-v1 commit is a protocol error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SyncobjCommitError {
    /// Points were set but no buffer is attached.
    #[error("acquire or release point set without a buffer attached")]
    NoBuffer,
    /// A buffer is attached without an acquire point.
    #[error("buffer attached without an acquire point")]
    NoAcquirePoint,
    /// A buffer is attached without a release point.
    #[error("buffer attached without a release point")]
    NoReleasePoint,
    /// Acquire and release on the same timeline with acquire >= release.
    #[error("release point {release} is not after acquire point {acquire} on the same timeline")]
    ConflictingPoints {
        /// The acquire point.
        acquire: u64,
        /// The release point.
        release: u64,
    },
    /// The buffer is not a dma-buf.
    #[error("explicit sync needs a linux-dmabuf buffer")]
    UnsupportedBuffer,
}

impl SyncobjCommitError {
    /// The `wp_linux_drm_syncobj_surface_v1.error` code to post.
    pub fn code(&self) -> wp_linux_drm_syncobj_surface_v1::Error {
        use wp_linux_drm_syncobj_surface_v1::Error as E;
        match self {
            SyncobjCommitError::NoBuffer => E::NoBuffer,
            SyncobjCommitError::NoAcquirePoint => E::NoAcquirePoint,
            SyncobjCommitError::NoReleasePoint => E::NoReleasePoint,
            SyncobjCommitError::ConflictingPoints { .. } => E::ConflictingPoints,
            SyncobjCommitError::UnsupportedBuffer => E::UnsupportedBuffer,
        }
    }
}

/// Checks a syncobj surface's commit. Points are `(timeline identity, value)`.
pub fn check_syncobj_commit<T: PartialEq>(
    buffer: PendingBuffer,
    acquire: Option<(T, u64)>,
    release: Option<(T, u64)>,
) -> Result<(), SyncobjCommitError> {
    if !buffer.is_new() {
        return if acquire.is_some() || release.is_some() {
            Err(SyncobjCommitError::NoBuffer)
        } else {
            Ok(())
        };
    }
    let Some((acq_tl, acq)) = acquire else {
        return Err(SyncobjCommitError::NoAcquirePoint);
    };
    let Some((rel_tl, rel)) = release else {
        return Err(SyncobjCommitError::NoReleasePoint);
    };
    if acq_tl == rel_tl && acq >= rel {
        return Err(SyncobjCommitError::ConflictingPoints {
            acquire: acq,
            release: rel,
        });
    }
    if buffer != PendingBuffer::Dmabuf {
        return Err(SyncobjCommitError::UnsupportedBuffer);
    }
    Ok(())
}

/// Why a zwp_linux_explicit_synchronization_v1 commit is a protocol error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExplicitCommitError {
    /// An acquire fence or release request without a buffer attached.
    #[error("acquire fence or release request without a buffer attached")]
    NoBuffer,
    /// An acquire fence on a buffer that is not a dma-buf.
    #[error("acquire fence on a buffer that is not a linux-dmabuf buffer")]
    UnsupportedBuffer,
}

impl ExplicitCommitError {
    /// The `zwp_linux_surface_synchronization_v1.error` code to post.
    pub fn code(&self) -> zwp_linux_surface_synchronization_v1::Error {
        use zwp_linux_surface_synchronization_v1::Error as E;
        match self {
            ExplicitCommitError::NoBuffer => E::NoBuffer,
            ExplicitCommitError::UnsupportedBuffer => E::UnsupportedBuffer,
        }
    }
}

/// Checks an explicit-sync-v1 surface's commit.
pub fn check_explicit_commit(
    buffer: PendingBuffer,
    has_acquire_fence: bool,
    has_release: bool,
) -> Result<(), ExplicitCommitError> {
    if (has_acquire_fence || has_release) && !buffer.is_new() {
        return Err(ExplicitCommitError::NoBuffer);
    }
    if has_acquire_fence && buffer != PendingBuffer::Dmabuf {
        return Err(ExplicitCommitError::UnsupportedBuffer);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use PendingBuffer::*;

    #[test]
    fn syncobj_plain_commits_are_fine() {
        assert_eq!(check_syncobj_commit::<u8>(Unchanged, None, None), Ok(()));
        assert_eq!(check_syncobj_commit::<u8>(Removed, None, None), Ok(()));
        assert_eq!(
            check_syncobj_commit(Dmabuf, Some((1, 1)), Some((1, 2))),
            Ok(())
        );
        assert_eq!(
            check_syncobj_commit(Dmabuf, Some((1, 9)), Some((2, 0))),
            Ok(())
        );
    }

    #[test]
    fn syncobj_points_without_buffer() {
        for b in [Unchanged, Removed] {
            assert_eq!(
                check_syncobj_commit(b, Some((1, 1)), None),
                Err(SyncobjCommitError::NoBuffer)
            );
            assert_eq!(
                check_syncobj_commit(b, None, Some((1, 2))),
                Err(SyncobjCommitError::NoBuffer)
            );
            assert_eq!(
                check_syncobj_commit(b, Some((1, 1)), Some((1, 2))),
                Err(SyncobjCommitError::NoBuffer)
            );
        }
    }

    #[test]
    fn syncobj_missing_points() {
        assert_eq!(
            check_syncobj_commit::<u8>(Dmabuf, None, None),
            Err(SyncobjCommitError::NoAcquirePoint)
        );
        assert_eq!(
            check_syncobj_commit(Dmabuf, None, Some((1, 2))),
            Err(SyncobjCommitError::NoAcquirePoint)
        );
        assert_eq!(
            check_syncobj_commit(Dmabuf, Some((1, 1)), None),
            Err(SyncobjCommitError::NoReleasePoint)
        );
    }

    #[test]
    fn syncobj_conflicting_points_same_timeline_only() {
        assert_eq!(
            check_syncobj_commit(Dmabuf, Some((1, 3)), Some((1, 3))),
            Err(SyncobjCommitError::ConflictingPoints {
                acquire: 3,
                release: 3
            })
        );
        assert_eq!(
            check_syncobj_commit(Dmabuf, Some((1, 4)), Some((1, 3))),
            Err(SyncobjCommitError::ConflictingPoints {
                acquire: 4,
                release: 3
            })
        );
        assert_eq!(
            check_syncobj_commit(Dmabuf, Some((1, u64::MAX)), Some((1, 0))),
            Err(SyncobjCommitError::ConflictingPoints {
                acquire: u64::MAX,
                release: 0
            })
        );
        assert_eq!(
            check_syncobj_commit(Dmabuf, Some((1, 4)), Some((2, 3))),
            Ok(())
        );
    }

    #[test]
    fn syncobj_non_dmabuf() {
        assert_eq!(
            check_syncobj_commit(Other, Some((1, 1)), Some((1, 2))),
            Err(SyncobjCommitError::UnsupportedBuffer)
        );
    }

    #[test]
    fn syncobj_codes() {
        use wp_linux_drm_syncobj_surface_v1::Error as E;
        assert_eq!(SyncobjCommitError::NoBuffer.code(), E::NoBuffer);
        assert_eq!(SyncobjCommitError::NoAcquirePoint.code(), E::NoAcquirePoint);
        assert_eq!(SyncobjCommitError::NoReleasePoint.code(), E::NoReleasePoint);
        assert_eq!(
            SyncobjCommitError::ConflictingPoints {
                acquire: 0,
                release: 0
            }
            .code(),
            E::ConflictingPoints
        );
        assert_eq!(
            SyncobjCommitError::UnsupportedBuffer.code(),
            E::UnsupportedBuffer
        );
        assert_eq!(E::NoSurface as u32, 1);
        assert_eq!(E::ConflictingPoints as u32, 6);
    }

    #[test]
    fn explicit_rules() {
        assert_eq!(check_explicit_commit(Unchanged, false, false), Ok(()));
        assert_eq!(check_explicit_commit(Other, false, true), Ok(()));
        assert_eq!(check_explicit_commit(Dmabuf, true, true), Ok(()));
        assert_eq!(
            check_explicit_commit(Unchanged, true, false),
            Err(ExplicitCommitError::NoBuffer)
        );
        assert_eq!(
            check_explicit_commit(Removed, false, true),
            Err(ExplicitCommitError::NoBuffer)
        );
        assert_eq!(
            check_explicit_commit(Other, true, false),
            Err(ExplicitCommitError::UnsupportedBuffer)
        );
        use zwp_linux_surface_synchronization_v1::Error as E;
        assert_eq!(ExplicitCommitError::NoBuffer.code(), E::NoBuffer);
        assert_eq!(E::NoBuffer as u32, 5);
        assert_eq!(
            ExplicitCommitError::UnsupportedBuffer.code(),
            E::UnsupportedBuffer
        );
    }
}

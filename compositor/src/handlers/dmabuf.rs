//! linux-dmabuf v4+ with default feedback whose main device is the render device, and
//! per-surface feedback with a scanout tranche for surfaces that may go on a plane
//! (tty; see [`dmabuf_surface`](super::dmabuf_surface)).

use smithay::{
    backend::allocator::{dmabuf::Dmabuf, Buffer, Format},
    delegate_dmabuf,
    reexports::wayland_server::{protocol::wl_surface::WlSurface, DisplayHandle},
    wayland::dmabuf::{
        DmabufFeedback, DmabufFeedbackBuilder, DmabufGlobal, DmabufHandler, DmabufState,
        ImportNotifier,
    },
};

use crate::{device::RenderDevice, state::State};

/// The linux-dmabuf global and its default feedback.
#[derive(Debug)]
pub struct DmabufSupport {
    /// The global.
    pub global: DmabufGlobal,
    /// Default feedback (main device + renderer formats).
    pub feedback: DmabufFeedback,
    /// `dev_t` of the main device.
    pub main_device: u64,
    /// What the renderer imports (the render tranche).
    pub formats: Vec<Format>,
    /// Per output and kind of plane, its feedback with a scanout tranche (built on
    /// first use; `None`: the output has none). Outputs no longer in the space are
    /// dropped.
    pub(crate) scanout: Vec<super::dmabuf_surface::CachedScanout>,
    /// The layout the per-surface feedback was last chosen for.
    pub(crate) layout: super::dmabuf_surface::Layout,
}

/// Errors setting up linux-dmabuf.
#[derive(Debug, thiserror::Error)]
pub enum DmabufError {
    /// The renderer cannot import any dma-buf format.
    #[error("the renderer imports no dma-buf format")]
    NoFormats,
    /// Building the feedback (format table memfd) failed.
    #[error("building dma-buf feedback: {0}")]
    Feedback(#[source] std::io::Error),
}

impl DmabufSupport {
    /// Advertise linux-dmabuf (v5, with feedback) for `device` and the formats the
    /// renderer can import.
    pub fn new(
        dh: &DisplayHandle,
        state: &mut DmabufState,
        device: &RenderDevice,
        formats: Vec<Format>,
    ) -> Result<Self, DmabufError> {
        if formats.is_empty() {
            return Err(DmabufError::NoFormats);
        }
        let feedback = DmabufFeedbackBuilder::new(device.dev_id(), formats.clone())
            .build()
            .map_err(DmabufError::Feedback)?;
        let global = state.create_global_with_default_feedback::<State>(dh, &feedback);
        Ok(Self {
            global,
            feedback,
            main_device: device.dev_id(),
            formats,
            scanout: Vec::new(),
            layout: Default::default(),
        })
    }
}

impl DmabufHandler for State {
    fn dmabuf_state(&mut self) -> &mut DmabufState {
        &mut self.protocols.dmabuf
    }

    fn dmabuf_imported(
        &mut self,
        _global: &DmabufGlobal,
        dmabuf: Dmabuf,
        notifier: ImportNotifier,
    ) {
        // The buffer's plane fds stay open as long as it exists: charge them to the
        // client's budget first.
        let charge = match notifier.client() {
            Some(client) => {
                let dh = self.display_handle.clone();
                match self
                    .sync_bridge
                    .charge_dmabuf(&dh, &client, dmabuf.num_planes())
                {
                    Ok(charge) => charge,
                    Err(_) => {
                        self.stats.dmabuf_import_failures += 1;
                        notifier.failed();
                        return;
                    }
                }
            }
            None => {
                notifier.failed();
                return;
            }
        };
        match self.backend.import_dmabuf(&dmabuf) {
            Ok(()) => {
                self.stats.dmabuf_imports += 1;
                match notifier.successful::<State>() {
                    Ok(buffer) => self.sync_bridge.keep_buffer_charge(&buffer, charge),
                    Err(_) => tracing::debug!("dma-buf import: client went away"),
                }
            }
            Err(err) => {
                self.stats.dmabuf_import_failures += 1;
                tracing::warn!(%err, format = ?dmabuf.format(), "dma-buf import refused");
                notifier.failed();
            }
        }
    }

    fn new_surface_feedback(
        &mut self,
        surface: &WlSurface,
        _global: &DmabufGlobal,
    ) -> Option<DmabufFeedback> {
        // What the surface has now: the scanout feedback if it may go on a plane (chosen
        // after the last refresh cycle; its state is locked here, see the function).
        self.surface_dmabuf_feedback(surface)
    }
}

delegate_dmabuf!(State);

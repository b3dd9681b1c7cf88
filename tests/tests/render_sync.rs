//! A render whose sync point is neither reached nor exportable (GLES without
//! `EGL_ANDROID_native_fence_sync`, e.g. Mesa's llvmpipe; or a failed export) must not
//! count as finished: the buffers it sampled are released only after the sync point is
//! reached. The in-process compositor gets a sync point made from a fence the test
//! controls (smithay's `Fence` trait, not exportable like a plain EGL fence), reported
//! through `State::report_render`, the call every backend's frame goes through.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use syncbridge_compositor::smithay::backend::renderer::sync::{Fence, Interrupted, SyncPoint};
use syncbridge_tests::client::{harness::Harness, Commit};
use wayland_client::protocol::wl_shm::Format::Argb8888;

/// A GPU fence stand-in: not exportable, reached when the test says so.
#[derive(Debug, Default)]
struct TestFence {
    reached: Mutex<bool>,
    cond: Condvar,
    waited: AtomicBool,
}

impl TestFence {
    fn reach(&self) {
        let mut r = self.reached.lock().expect("fence lock");
        *r = true;
        self.cond.notify_all();
    }
}

impl Fence for TestFence {
    fn is_signaled(&self) -> bool {
        *self.reached.lock().expect("fence lock")
    }
    fn wait(&self) -> Result<(), Interrupted> {
        self.waited.store(true, Ordering::SeqCst);
        let mut r = self.reached.lock().expect("fence lock");
        while !*r {
            r = self.cond.wait(r).expect("fence lock");
        }
        Ok(())
    }
    fn is_exportable(&self) -> bool {
        false
    }
    fn export(&self) -> Option<std::os::fd::OwnedFd> {
        None
    }
}

/// A shared handle, so the test keeps one while the compositor's thread waits on another.
#[derive(Debug, Clone)]
struct SharedFence(Arc<TestFence>);

impl Fence for SharedFence {
    fn is_signaled(&self) -> bool {
        self.0.is_signaled()
    }
    fn wait(&self) -> Result<(), Interrupted> {
        self.0.wait()
    }
    fn is_exportable(&self) -> bool {
        false
    }
    fn export(&self) -> Option<std::os::fd::OwnedFd> {
        None
    }
}

#[test]
fn buffers_sampled_by_an_unexportable_render_are_released_after_it_is_reached() {
    let mut h = Harness::new();
    let c = h.add_client();
    let s = h.create_toplevel(c);
    h.client(c).explicit_surface(s);
    h.roundtrip(c);
    let b1 = h
        .client(c)
        .create_shm_buffer_filled(64, 48, Argb8888, 0xff00_80ff);
    h.client(c).attach(s, Some(b1));
    let k1 = h.client(c).commit(s, Commit::with_explicit_release());
    h.roundtrip(c);
    h.frame();

    // The "GPU" render that sampled B1, not done yet.
    let state = h.state();
    let window = state.space.elements().next().expect("one window").clone();
    let surface = window.toplevel().expect("toplevel").wl_surface().clone();
    let id1 = state.sync_bridge.buffer_id(&surface).expect("B1 tracked");
    let gpu = SharedFence(Arc::new(TestFence::default()));
    state.report_render(SyncPoint::from(gpu.clone()), &[id1]);

    // The client replaces B1; frames go on.
    let b2 = h
        .client(c)
        .create_shm_buffer_filled(64, 48, Argb8888, 0xff80_00ff);
    h.client(c).attach(s, Some(b2));
    h.client(c).commit(s, Commit::with_explicit_release());
    h.roundtrip(c);
    for _ in 0..3 {
        h.frame();
        h.roundtrip(c);
        assert!(
            h.client(c).rec.explicit_release(k1).is_none(),
            "B1 released while the render that samples it is not done"
        );
    }
    assert!(
        h.pump_until(300, |_| gpu.0.waited.load(Ordering::SeqCst)),
        "the compositor waits for the sync point (on its thread)"
    );
    let st = h.state().stats.render_sync.clone();
    assert_eq!((st.deferred, st.deferred_done), (1, 0), "{st:?}");

    gpu.0.reach();
    assert!(
        h.pump_until(300, |h| h.client(c).rec.explicit_release(k1).is_some()),
        "B1 is released once the render is done"
    );
    let st = h.state().stats.render_sync.clone();
    assert_eq!(
        (st.deferred, st.deferred_done, st.waited_inline),
        (1, 1, 0),
        "{st:?}"
    );
    let sync = h.state().sync_bridge.stats();
    assert_eq!((sync.reads_held, sync.reads_held_ended), (1, 1), "{sync:?}");
}

//! What the last composition of an output drew, kept cheap to compare: whether a cycle
//! has anything new to draw.
//!
//! A composited output renders into one of two slots, so the damage tracker renders with
//! buffer age 2 and always finds damage the other slot missed after a frame that changed
//! something. Whether *this* cycle changed anything is a different question: answering
//! it with a second damage tracker (age 1) did the whole damage computation (opaque-region
//! subtraction over every element, O(n^2) rectangles) twice per frame. Nothing can have
//! changed on screen when the same elements, in the same order, show the same commits at
//! the same place with the same source, transform and alpha on the same output state:
//! that is all the damage tracker reads. This compares exactly that, in O(n).
//!
//! It errs towards "changed": a commit without damage counts as a change (the tracker
//! would have found none), which costs one unneeded composition, never a missed one.

use smithay::{
    backend::renderer::{
        element::{Element, Id, RenderElementStates},
        utils::CommitCounter,
    },
    output::Output,
    utils::{Physical, Rectangle, Size, Transform},
};

/// One element as the damage tracker sees it.
#[derive(Debug, PartialEq)]
struct ElementKey {
    id: Id,
    commit: CommitCounter,
    geometry: Rectangle<i32, Physical>,
    /// The source rectangle's `f64`s, by bit pattern (`NaN`-safe equality).
    src: [u64; 4],
    transform: Transform,
    alpha: u32,
}

/// The output state and elements of one composition, front to back.
#[derive(Debug, PartialEq)]
pub struct SceneSnapshot {
    mode: Option<Size<i32, Physical>>,
    transform: Transform,
    scale: u64,
    elements: Vec<ElementKey>,
}

impl SceneSnapshot {
    /// What composing `elements` (front to back) on `output` as it is now would draw.
    pub fn of<E: Element>(output: &Output, elements: &[E]) -> SceneSnapshot {
        let scale = output.current_scale().fractional_scale();
        SceneSnapshot {
            mode: output.current_mode().map(|m| m.size),
            transform: output.current_transform(),
            scale: scale.to_bits(),
            elements: elements
                .iter()
                .map(|e| {
                    let src = e.src();
                    ElementKey {
                        id: e.id().clone(),
                        commit: e.current_commit(),
                        geometry: e.geometry(scale.into()),
                        src: [src.loc.x, src.loc.y, src.size.w, src.size.h].map(f64::to_bits),
                        transform: e.transform(),
                        alpha: e.alpha().to_bits(),
                    }
                })
                .collect(),
        }
    }
}

/// The last composition of an output: what it drew and its elements' render states (what
/// a cycle that skips its composition reports for presentation feedback).
#[derive(Debug)]
pub struct LastScene {
    pub snapshot: SceneSnapshot,
    pub states: RenderElementStates,
}

#[cfg(test)]
mod tests {
    use smithay::{
        backend::renderer::{
            element::{solid::SolidColorRenderElement, Kind},
            utils::CommitCounter,
        },
        output::{Mode, PhysicalProperties, Subpixel},
        utils::Point,
    };

    use super::*;

    fn output() -> Output {
        let output = Output::new(
            "test".into(),
            PhysicalProperties {
                size: (0, 0).into(),
                subpixel: Subpixel::Unknown,
                make: "t".into(),
                model: "t".into(),
            },
        );
        let mode = Mode {
            size: (640, 480).into(),
            refresh: 60_000,
        };
        output.change_current_state(Some(mode), None, None, None);
        output
    }

    fn element(id: &Id, at: (i32, i32), commit: CommitCounter) -> SolidColorRenderElement {
        SolidColorRenderElement::new(
            id.clone(),
            Rectangle::new(Point::from(at), (64, 64).into()),
            commit,
            [1.0, 0.0, 0.0, 1.0],
            Kind::Unspecified,
        )
    }

    #[test]
    fn the_same_scene_compares_equal_and_any_change_does_not() {
        let out = output();
        let (a, b) = (Id::new(), Id::new());
        let c0 = CommitCounter::default();
        let mut c1 = c0;
        c1.increment();
        let scene = [element(&a, (0, 0), c0), element(&b, (10, 10), c0)];
        let base = SceneSnapshot::of(&out, &scene);
        assert_eq!(base, SceneSnapshot::of(&out, &scene));
        // A new commit of one element.
        let committed = [element(&a, (0, 0), c1), element(&b, (10, 10), c0)];
        assert_ne!(base, SceneSnapshot::of(&out, &committed));
        // A move.
        let moved = [element(&a, (1, 0), c0), element(&b, (10, 10), c0)];
        assert_ne!(base, SceneSnapshot::of(&out, &moved));
        // Another stacking order.
        let restacked = [element(&b, (10, 10), c0), element(&a, (0, 0), c0)];
        assert_ne!(base, SceneSnapshot::of(&out, &restacked));
        // One element gone.
        assert_ne!(base, SceneSnapshot::of(&out, &scene[..1]));
        // The output's scale.
        out.change_current_state(None, None, Some(smithay::output::Scale::Integer(2)), None);
        assert_ne!(base, SceneSnapshot::of(&out, &scene));
    }
}

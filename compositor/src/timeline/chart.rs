//! The timeline chart: a few consecutive buffers of one surface, one row each, on one time
//! axis, with the output's atomic commits and page flips as vertical lines. Hand-written
//! SVG: a few lines and markers need no plotting library.

use std::fmt::Write as _;

use super::rows::{BufferRow, Timeline, CHARTED};

const WIDTH: f64 = 1100.0;
const LEFT: f64 = 120.0;
const RIGHT: f64 = 270.0;
const TOP: f64 = 96.0;
const ROW: f64 = 46.0;
const AXIS: f64 = 44.0;

const FLIP: &str = "#3b7dd8";
const COMMIT: &str = "#9a9a9a";
const ACQUIRE: &str = "#e08a00";
const SAMPLED: &str = "#2e9e4f";
const PLANE: &str = "#6a3dc8";
const RELEASE: &str = "#d0312d";

/// Maps CLOCK_MONOTONIC ns to x.
struct Axis {
    t0: u64,
    t1: u64,
}

impl Axis {
    fn x(&self, t: u64) -> f64 {
        let span = (self.t1 - self.t0).max(1) as f64;
        LEFT + (t.saturating_sub(self.t0) as f64 / span).min(1.0) * (WIDTH - LEFT - RIGHT)
    }

    fn contains(&self, t: u64) -> bool {
        (self.t0..=self.t1).contains(&t)
    }

    fn ms(&self, t: u64) -> f64 {
        t.saturating_sub(self.t0) as f64 / 1e6
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A tick step (ms) giving about 10 ticks over `span_ms`.
fn tick_step(span_ms: f64) -> f64 {
    let raw = span_ms / 10.0;
    [
        0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0,
    ]
    .into_iter()
    .find(|s| *s >= raw)
    .unwrap_or(1000.0)
}

/// The time span the rows cover, with the flip after each release, padded.
fn axis_for(timeline: &Timeline, rows: &[&BufferRow]) -> Axis {
    let mut t0 = u64::MAX;
    let mut t1 = 0;
    for r in rows {
        if let Some(c) = r.commit_ns {
            t0 = t0.min(c);
        }
        let mut last = r.applied_ns;
        if let Some((t, _)) = &r.released {
            last = last.max(*t);
        }
        if let Some(f) = timeline.flip_ending_scanout(r) {
            last = last.max(f);
        }
        for (t, _) in &r.off_plane {
            last = last.max(*t);
        }
        t1 = t1.max(last);
    }
    let pad = (t1.saturating_sub(t0) / 40).max(100_000);
    Axis {
        t0: t0.saturating_sub(pad),
        t1: t1 + pad,
    }
}

fn legend(s: &mut String) {
    let items: [(&str, &str); 8] = [
        ("circle-open", "commit"),
        ("diamond", "acquire fence signalled"),
        ("circle", "commit applied"),
        ("tick", "sampled by a render (dotted: no fence)"),
        ("square", "put on a plane"),
        ("triangle", "off the plane (filled: out-fence)"),
        ("release", "release sent"),
        ("flip", "page flip (kernel time)"),
    ];
    for (i, (shape, label)) in items.iter().enumerate() {
        let x = 20.0 + (i % 4) as f64 * 260.0;
        let y = 44.0 + (i / 4) as f64 * 22.0;
        marker(s, shape, x + 6.0, y - 4.0);
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{y:.1}">{}</text>"#,
            x + 18.0,
            esc(label)
        );
    }
}

fn marker(s: &mut String, shape: &str, x: f64, y: f64) {
    let _ = match shape {
        "circle-open" => write!(
            s,
            r#"<circle cx="{x:.1}" cy="{y:.1}" r="4.5" fill="white" stroke="black" stroke-width="1.5"/>"#
        ),
        "circle" => write!(
            s,
            r#"<circle cx="{x:.1}" cy="{y:.1}" r="4.5" fill="black"/>"#
        ),
        "diamond" => write!(
            s,
            r#"<path d="M{x:.1} {:.1} L{:.1} {y:.1} L{x:.1} {:.1} L{:.1} {y:.1} Z" fill="{ACQUIRE}"/>"#,
            y - 6.0,
            x + 6.0,
            y + 6.0,
            x - 6.0
        ),
        "tick" | "tick-unfenced" => write!(
            s,
            r#"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="{SAMPLED}" stroke-width="2.5"{}/>"#,
            y - 8.0,
            y + 8.0,
            if shape == "tick" {
                ""
            } else {
                r#" stroke-dasharray="2 2""#
            }
        ),
        "square" => write!(
            s,
            r#"<rect x="{:.1}" y="{:.1}" width="9" height="9" fill="{PLANE}"/>"#,
            x - 4.5,
            y - 4.5
        ),
        "triangle" | "triangle-open" => write!(
            s,
            r#"<path d="M{:.1} {:.1} L{:.1} {:.1} L{x:.1} {:.1} Z" fill="{}" stroke="{PLANE}" stroke-width="1.5"/>"#,
            x - 5.0,
            y - 5.0,
            x + 5.0,
            y - 5.0,
            y + 5.0,
            if shape == "triangle" { PLANE } else { "white" }
        ),
        "release" => write!(
            s,
            r#"<rect x="{:.1}" y="{:.1}" width="4" height="18" fill="{RELEASE}"/>"#,
            x - 2.0,
            y - 9.0
        ),
        "flip" => write!(
            s,
            r#"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="{FLIP}" stroke-width="2"/>"#,
            y - 9.0,
            y + 9.0
        ),
        _ => Ok(()),
    };
}

fn row(s: &mut String, timeline: &Timeline, axis: &Axis, r: &BufferRow, y: f64) {
    let _ = write!(
        s,
        r#"<text x="10" y="{:.1}" font-weight="bold">buffer {}</text>"#,
        y + 4.0,
        r.buffer
    );
    let applied = axis.x(r.applied_ns);
    if let Some(c) = r.commit_ns {
        // Waiting: from the commit to its application.
        let _ = write!(
            s,
            r#"<line x1="{:.1}" y1="{y:.1}" x2="{applied:.1}" y2="{y:.1}" stroke="{ACQUIRE}" stroke-width="2" stroke-dasharray="4 3"/>"#,
            axis.x(c)
        );
    }
    if let Some((t, _)) = &r.released {
        // Current: the compositor (renderer or display) may read it.
        let _ = write!(
            s,
            r##"<rect x="{applied:.1}" y="{:.1}" width="{:.1}" height="12" fill="#dcebdc"/>"##,
            y - 6.0,
            (axis.x(*t) - applied).max(1.0)
        );
    }
    if let Some(c) = r.commit_ns {
        marker(s, "circle-open", axis.x(c), y);
    }
    if let Some(a) = r.acquire_signalled_ns.filter(|t| axis.contains(*t)) {
        marker(s, "diamond", axis.x(a), y);
    }
    marker(s, "circle", applied, y);
    for (t, fenced) in r.sampled.iter().filter(|(t, _)| axis.contains(*t)) {
        marker(
            s,
            if *fenced { "tick" } else { "tick-unfenced" },
            axis.x(*t),
            y,
        );
    }
    for t in r.on_plane.iter().filter(|t| axis.contains(**t)) {
        marker(s, "square", axis.x(*t), y);
    }
    for (t, fenced) in r.off_plane.iter().filter(|(t, _)| axis.contains(*t)) {
        marker(
            s,
            if *fenced { "triangle" } else { "triangle-open" },
            axis.x(*t),
            y,
        );
    }
    if let Some((t, how)) = &r.released {
        let x = axis.x(*t);
        marker(s, "release", x, y);
        let lead = match timeline.release_lead_ns(r) {
            Some(ns) if ns >= 0 => format!("{:.1} ms before its flip", ns as f64 / 1e6),
            Some(ns) => format!("{:.1} ms after its flip", -ns as f64 / 1e6),
            None => String::new(),
        };
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" fill="{RELEASE}">{}</text><text x="{:.1}" y="{:.1}" font-size="11">{}</text>"#,
            WIDTH - RIGHT + 10.0,
            y - 2.0,
            esc(how),
            WIDTH - RIGHT + 10.0,
            y + 12.0,
            esc(&lead)
        );
    }
}

/// The chart of [`Timeline::chart_rows`], as an SVG document.
pub fn svg(timeline: &Timeline) -> String {
    let rows = timeline.chart_rows(CHARTED);
    let height = TOP + ROW * rows.len().max(1) as f64 + AXIS;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    s.push_str(r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = write!(
        s,
        r#"<text x="10" y="20" font-size="15" font-weight="bold">A buffer's life in syncbridge: {} consecutive buffers of one surface</text>"#,
        rows.len()
    );
    legend(&mut s);
    if rows.is_empty() {
        let _ = write!(
            s,
            r#"<text x="{LEFT}" y="{:.1}">No buffer was committed, applied and released while the timeline was recorded.</text>"#,
            TOP + 20.0
        );
        s.push_str("</svg>\n");
        return s;
    }
    let axis = axis_for(timeline, &rows);
    let bottom = TOP + ROW * rows.len() as f64;
    for (t, _, _) in timeline
        .atomic_commits
        .iter()
        .filter(|c| axis.contains(c.0))
    {
        let x = axis.x(*t);
        let _ = write!(
            s,
            r#"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{bottom:.1}" stroke="{COMMIT}" stroke-dasharray="3 3"/>"#,
            TOP - 14.0
        );
    }
    for (t, _) in timeline.page_flips.iter().filter(|f| axis.contains(f.0)) {
        let x = axis.x(*t);
        let _ = write!(
            s,
            r#"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{bottom:.1}" stroke="{FLIP}" stroke-width="1.5"/><text x="{x:.1}" y="{:.1}" font-size="10" fill="{FLIP}" text-anchor="middle">flip</text>"#,
            TOP - 14.0,
            TOP - 18.0
        );
    }
    for (i, r) in rows.iter().enumerate() {
        row(&mut s, timeline, &axis, r, TOP + ROW * (i as f64 + 0.5));
    }
    // The time axis, in ms from the first commit shown.
    let span_ms = axis.ms(axis.t1);
    let step = tick_step(span_ms);
    let _ = write!(
        s,
        r#"<line x1="{LEFT}" y1="{bottom:.1}" x2="{:.1}" y2="{bottom:.1}" stroke="black"/>"#,
        WIDTH - RIGHT
    );
    let decimals = usize::from(step < 1.0);
    let mut k = 0u32;
    while f64::from(k) * step <= span_ms {
        let ms = f64::from(k) * step;
        let x = axis.x(axis.t0 + (ms * 1e6) as u64);
        let _ = write!(
            s,
            r#"<line x1="{x:.1}" y1="{bottom:.1}" x2="{x:.1}" y2="{:.1}" stroke="black"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" font-size="11">{ms:.decimals$}</text>"#,
            bottom + 5.0,
            bottom + 18.0
        );
        k += 1;
    }
    let _ = write!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">ms (CLOCK_MONOTONIC); dashed grey: atomic commits; the bar: current, the compositor may read it</text>"#,
        (LEFT + WIDTH - RIGHT) / 2.0,
        bottom + 36.0
    );
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_released_buffer_gets_its_row_and_its_lead_over_its_flip() {
        let mut t = Timeline::default();
        for (i, b) in (10..13u64).enumerate() {
            let base = i as u64 * 16_000_000;
            t.rows.insert(
                b,
                BufferRow {
                    buffer: b,
                    surface: 1,
                    commit_ns: Some(base + 1_000_000),
                    applied_ns: base + 2_000_000,
                    on_plane: vec![base + 3_000_000],
                    off_plane: vec![(base + 19_000_000, true)],
                    released: Some((base + 19_500_000, "wl_buffer.release".into())),
                    ..Default::default()
                },
            );
            t.atomic_commits.push((base + 18_500_000, 0, true));
            t.page_flips.push((base + 24_000_000, 0));
        }
        let svg = svg(&t);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        for b in 10..13 {
            assert!(svg.contains(&format!(">buffer {b}<")), "row of buffer {b}");
        }
        assert!(svg.contains("4.5 ms before its flip"), "{svg}");
        assert!(svg.contains(">flip<"), "flip lines are drawn");
    }

    #[test]
    fn nothing_recorded_says_so() {
        let svg = svg(&Timeline::default());
        assert!(svg.contains("No buffer was committed"));
    }
}

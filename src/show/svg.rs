//! Draws a [`Timeline`] as one SVG picture, by hand: time flows right in scheduling steps;
//! a swimlane per task (its operations as bars from start to end with their results, its
//! sleeps on the kmap pool and for memory, and a row per lock: holding solid, waiting and
//! sleeping hatched with an arrow to the holder), the kmap pool (a row per slot, each kmap a
//! span in its task's colour, flushes as dashed lines), then a lane per CPU (the task each
//! step ran, interrupts, the kmap_atomic stack with a track per depth, an interrupt's remap
//! of a task's slot hatched red, the TLB entries of the pages that matter with their
//! flushes); the violation is a red line where the oracle fired, with its message in the
//! header, the lanes it names tinted, the kmaps and entries it involves outlined red, and a
//! deadlock's cycle drawn as red arrows from each waiter to the task it waits on. Every
//! shape has a `<title>`: the browser shows it on hover (and `show`'s `.html` page in its
//! detail panel).
//!
//! What it keeps true: the output is well-formed XML (every text and attribute escaped,
//! every element closed) and a pure function of the timeline; every task and CPU of the run
//! is named in a lane label (`task N`, `CPU N`) and the oracle in the header.

use super::timeline::{AtomicSpan, Column, LockRow, Pool, Sleep, SleepKind, SpanKind, TaskLane, Timeline};
use mm_reference::events::{frame_name, AtomicBy, LockMode};
use mm_reference::{OpResult, TaskId};
use std::fmt::Write;

const LEFT: f64 = 290.0;
const MARGIN: f64 = 16.0;
const FONT: f64 = 11.0;
/// The width of one character of the monospace font at [`FONT`].
const CHAR_W: f64 = 6.7;
const OP_H: f64 = 18.0;
const TRACK_H: f64 = 14.0;
const LANE_PAD: f64 = 6.0;
const GAP_W: f64 = 26.0;
/// How much further right each arrow of a deadlock's cycle bulges than the one before.
const CYCLE_STEP: f64 = 44.0;
/// The width the columns share when they are few.
const COLUMNS_W: f64 = 1100.0;
/// The widest a step's column gets (when the steps are few).
const STEP_W_MAX: f64 = 88.0;
/// The width of a character of a note (10px bold).
const NOTE_CHAR_W: f64 = 6.3;

/// The picture's least width (the legend's rows end before it).
const LEGEND_W: f64 = 1120.0;
/// The height of a row of the legend.
const LEGEND_ROW: f64 = 18.0;
const PALETTE: [&str; 8] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#c9a227", "#e15759", "#9c755f",
];
const RED: &str = "#c0392b";
/// The colour of what an interrupt handler does.
const IRQ: &str = "#e67e22";

/// Escapes text for XML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

fn colour(t: TaskId) -> &'static str {
    PALETTE[t as usize % PALETTE.len()]
}

/// `text` cut to at most `chars` characters (with `…` when cut).
fn fit(text: &str, chars: usize) -> String {
    if text.chars().count() <= chars {
        text.to_string()
    } else if chars == 0 {
        String::new()
    } else {
        let mut s: String = text.chars().take(chars - 1).collect();
        s.push('…');
        s
    }
}

/// Lines of at most `width` characters, broken at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// Where the columns are: x of each step (its column's left edge and width).
struct Xs {
    col_x: Vec<f64>,
    col_w: Vec<f64>,
    /// Step index -> its column.
    step_col: Vec<usize>,
    end: f64,
}

impl Xs {
    fn new(tl: &Timeline) -> Xs {
        let steps = tl.columns.iter().filter(|c| matches!(c, Column::Step(_))).count();
        let gaps = tl.columns.len() - steps;
        let step_w = ((COLUMNS_W - gaps as f64 * GAP_W) / steps.max(1) as f64).clamp(14.0, STEP_W_MAX);
        let mut xs = Xs {
            col_x: Vec::new(),
            col_w: Vec::new(),
            step_col: vec![0; tl.steps.len()],
            end: LEFT,
        };
        for (c, col) in tl.columns.iter().enumerate() {
            let (w, range) = match *col {
                Column::Step(i) => (step_w, i..=i),
                Column::Gap { from, to } => (GAP_W, from..=to),
            };
            for i in range {
                xs.step_col[i] = c;
            }
            xs.col_x.push(xs.end);
            xs.col_w.push(w);
            xs.end += w;
        }
        xs
    }

    fn left(&self, step: usize) -> f64 {
        self.step_col.get(step).map_or(self.end, |&c| self.col_x[c])
    }

    fn right(&self, step: usize) -> f64 {
        self.step_col
            .get(step)
            .map_or(self.end, |&c| self.col_x[c] + self.col_w[c])
    }

    fn mid(&self, step: usize) -> f64 {
        (self.left(step) + self.right(step)) / 2.0
    }

    /// The x where a span that ends at `to` stops (the end of the run when open).
    fn stop(&self, to: Option<usize>) -> f64 {
        to.map_or(self.end, |s| self.mid(s))
    }
}

/// The y of each row of a task lane.
struct TaskYs {
    top: f64,
    op: f64,
    /// The top of the sleeps row, if the task slept (on the kmap pool, for memory).
    sleep: Option<f64>,
    /// Per lock row, per track: the track's top.
    tracks: Vec<Vec<f64>>,
    bottom: f64,
}

fn task_ys(lane: &TaskLane, top: f64) -> TaskYs {
    let op = top + LANE_PAD;
    let mut y = op + OP_H + 4.0;
    let sleep = (!lane.sleeps.is_empty()).then(|| {
        y += TRACK_H;
        y - TRACK_H
    });
    let tracks = lane
        .locks
        .iter()
        .map(|row| {
            (0..row.tracks)
                .map(|_| {
                    y += TRACK_H;
                    y - TRACK_H
                })
                .collect()
        })
        .collect();
    TaskYs {
        top,
        op,
        sleep,
        tracks,
        bottom: y + LANE_PAD,
    }
}

/// The y of each row of the pool lane.
struct PoolYs {
    top: f64,
    /// Per slot row, per track: the track's top.
    tracks: Vec<Vec<f64>>,
    bottom: f64,
}

fn pool_ys(pool: &Pool, top: f64) -> PoolYs {
    let mut y = top + LANE_PAD + 18.0;
    let tracks = pool
        .rows
        .iter()
        .map(|row| {
            (0..row.tracks)
                .map(|_| {
                    y += TRACK_H;
                    y - TRACK_H
                })
                .collect()
        })
        .collect();
    PoolYs {
        top,
        tracks,
        bottom: y + LANE_PAD,
    }
}

/// The y (middle) of the pool span of `task`'s kmap of `pfn` in `slot` that covers step `at`.
fn pool_span_y(pool: &Pool, ys: &PoolYs, slot: u32, task: TaskId, pfn: u32, at: usize) -> Option<f64> {
    let r = pool.rows.iter().position(|r| r.slot == slot)?;
    let span = pool.rows[r]
        .spans
        .iter()
        .find(|s| s.task == task && s.pfn == pfn && s.from <= at && s.to.is_none_or(|to| to >= at))?;
    Some(ys.tracks[r][span.track] + TRACK_H / 2.0)
}

/// The y (middle) of the track where `lane`'s span on `lock` that covers step `at` sits;
/// `waits` chooses waits or holds. `None` if the task has no such span then.
fn span_y(lane: &TaskLane, ys: &TaskYs, lock: &str, waits: bool, at: usize) -> Option<f64> {
    lane.locks.iter().enumerate().find_map(|(r, row)| {
        row.spans
            .iter()
            .find(|(s, _)| {
                s.lock.name == lock
                    && matches!(s.kind, SpanKind::Waits(_)) == waits
                    && s.from <= at
                    && s.to.is_none_or(|to| to >= at)
            })
            .map(|&(_, track)| ys.tracks[r][track] + TRACK_H / 2.0)
    })
}

fn result_text(r: &Option<OpResult>) -> String {
    match r {
        Some(r) => format!("→ {r}"),
        None => "(never returned)".to_string(),
    }
}

/// The SVG text of the picture of `tl`, titled `title` (the trace's file name).
pub fn render(tl: &Timeline, title: &str) -> String {
    let xs = Xs::new(tl);
    let cycle_len = tl.violation.as_ref().map_or(0, |v| v.cycle.len());
    let right = 150.0 + CYCLE_STEP * cycle_len as f64;
    let base_width = (xs.end + right).max(LEGEND_W);
    let text_chars = ((base_width - 2.0 * MARGIN) / CHAR_W) as usize;

    // Header: title, outcome and message, legend.
    let mut head: Vec<(String, &str)> = vec![(format!("mmfuzz show: {title}"), "title")];
    match &tl.violation {
        Some(v) => {
            head.push((format!("violation {}", v.oracle), "bad"));
            for line in wrap(&v.message, text_chars) {
                head.push((line, "msg"));
            }
        }
        None => head.push(("outcome: ok".to_string(), "good")),
    }
    let legend_y = MARGIN + 22.0 * head.len() as f64 + 4.0;
    let items = legend_items(tl);
    let (places, legend_rows) = legend_layout(&items, LEGEND_W);
    let axis_y = legend_y + LEGEND_ROW * legend_rows as f64 + 12.0;
    let lanes_top = axis_y + 22.0;

    let mut y = lanes_top;
    let task_rows: Vec<TaskYs> = tl
        .tasks
        .iter()
        .map(|lane| {
            let ys = task_ys(lane, y);
            y = ys.bottom;
            ys
        })
        .collect();
    let pool_rows = tl.pool.as_ref().map(|pool| {
        let ys = pool_ys(pool, y);
        y = ys.bottom;
        ys
    });
    let cpu_rows: Vec<(f64, f64)> = tl
        .cpus
        .iter()
        .map(|cpu| {
            let top = y;
            y += LANE_PAD
                + 18.0
                + TRACK_H * cpu.depths as f64
                + TRACK_H * cpu.tlb.len() as f64
                + if cpu.tlb_hidden > 0 { TRACK_H } else { 0.0 }
                + LANE_PAD;
            (top, y)
        })
        .collect();
    let lanes_bottom = y;
    // The kmaps the violation involves, named right of the lanes (past the cycle's arrows).
    let notes = kmap_notes(tl, &task_rows, pool_rows.as_ref(), &cpu_rows);
    let notes_x = xs.end
        + 12.0
        + if cycle_len > 0 {
            40.0 + CYCLE_STEP * cycle_len as f64
        } else {
            0.0
        };
    let notes_w = notes.iter().map(|(_, t, _)| t.chars().count()).max().unwrap_or(0) as f64 * NOTE_CHAR_W;
    let width = base_width.max(notes_x + notes_w + MARGIN);
    let mut foot: Vec<String> = Vec::new();
    if let Some(v) = &tl.violation {
        for (t, lock, on) in &v.cycle {
            foot.push(format!("task {t} waits for {lock} on task {on}"));
        }
        if !foot.is_empty() {
            foot.insert(0, "wait-for cycle:".to_string());
        }
    }
    foot.push("Hover over any shape for its details; steps are scheduling steps of the run.".to_string());
    let height = lanes_bottom + 16.0 + 16.0 * foot.len() as f64 + MARGIN;

    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" font-size="{FONT}">
<defs>
<pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#fff"/><line x1="0" y1="0" x2="0" y2="6" stroke="#888" stroke-width="2.5"/></pattern>
<pattern id="hatch-red" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#fff"/><line x1="0" y1="0" x2="0" y2="6" stroke="{RED}" stroke-width="2.5"/></pattern>
<pattern id="gap" width="4" height="4" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="4" height="4" fill="#f4f4f4"/><line x1="0" y1="0" x2="0" y2="4" stroke="#ddd" stroke-width="1.5"/></pattern>
<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerUnits="userSpaceOnUse" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#666"/></marker>
<marker id="arrow-red" viewBox="0 0 10 10" refX="9" refY="5" markerUnits="userSpaceOnUse" markerWidth="10" markerHeight="10" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{RED}"/></marker>
</defs>
<style>.title{{font-size:16px;font-weight:bold}} .bad{{font-size:14px;font-weight:bold;fill:{RED}}} .good{{font-size:14px;font-weight:bold;fill:#2e7d32}} .msg{{fill:#333}} .small{{font-size:9.5px;fill:#555}} .lbl{{font-size:10.5px;fill:#333}}</style>
<rect width="100%" height="100%" fill="#fff"/>
"##,
        w = width,
        h = height
    );
    for (i, (line, class)) in head.iter().enumerate() {
        let _ = writeln!(
            s,
            r#"<text x="{MARGIN}" y="{:.1}" class="{class}">{}</text>"#,
            MARGIN + 14.0 + 22.0 * i as f64,
            esc(line)
        );
    }
    legend(&mut s, &items, &places, legend_y);
    axis(&mut s, tl, &xs, axis_y, lanes_bottom);

    for (lane, ys) in tl.tasks.iter().zip(&task_rows) {
        task_lane(&mut s, tl, lane, ys, &xs);
    }
    if let (Some(pool), Some(ys)) = (&tl.pool, &pool_rows) {
        pool_lane(&mut s, tl, pool, ys, &xs);
    }
    for (cpu, &(top, bottom)) in tl.cpus.iter().zip(&cpu_rows) {
        cpu_lane(&mut s, tl, cpu.id as usize, top, bottom, &xs);
    }
    wait_arrows(&mut s, tl, &task_rows, &xs);
    if let (Some(pool), Some(ys)) = (&tl.pool, &pool_rows) {
        sleep_arrows(&mut s, tl, &task_rows, pool, ys, &xs);
    }
    if let Some(v) = &tl.violation {
        let x = xs.end + 3.0;
        let _ = writeln!(
            s,
            r#"<g><title>{}</title><line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{lanes_bottom:.1}" stroke="{RED}" stroke-width="2.5"/><text x="{:.1}" y="{:.1}" class="bad">✗ {}</text></g>"#,
            esc(&format!("violation {}: {}", v.oracle, v.message)),
            axis_y - 4.0,
            x + 4.0,
            axis_y + 10.0,
            v.oracle
        );
        cycle_arrows(&mut s, tl, &task_rows, &xs);
    }
    for (y, text, detail) in &notes {
        let _ = writeln!(
            s,
            r#"<g><title>{}</title><text x="{notes_x:.1}" y="{:.1}" font-size="10" font-weight="bold" fill="{RED}">{}</text></g>"#,
            esc(detail),
            y + 3.5,
            esc(text)
        );
    }
    for (i, line) in foot.iter().enumerate() {
        let class = if i == 0 && foot.len() > 1 { "bad" } else { "msg" };
        let _ = writeln!(
            s,
            r#"<text x="{MARGIN}" y="{:.1}" class="{class}">{}</text>"#,
            lanes_bottom + 22.0 + 16.0 * i as f64,
            esc(line)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// The kmaps, kmap_atomic entries and sleeps the violation involves: (y of their row, a
/// short name, the details).
fn kmap_notes(
    tl: &Timeline,
    task_rows: &[TaskYs],
    pool_rows: Option<&PoolYs>,
    cpu_rows: &[(f64, f64)],
) -> Vec<(f64, String, String)> {
    let mut notes = Vec::new();
    for (lane, ys) in tl.tasks.iter().zip(task_rows) {
        let Some(top) = ys.sleep else { continue };
        for sleep in lane.sleeps.iter().filter(|s| s.involved) {
            let what = match sleep.kind {
                SleepKind::Kmap(pfn) => format!("kmap of f{pfn}"),
                SleepKind::Memory => "memory".to_string(),
            };
            notes.push((
                top + TRACK_H / 2.0,
                format!("task {} sleeps for {what}", lane.id),
                sleep_detail(tl, lane.id, sleep),
            ));
        }
    }
    if let (Some(pool), Some(ys)) = (&tl.pool, pool_rows) {
        for (r, row) in pool.rows.iter().enumerate() {
            for span in row.spans.iter().filter(|s| s.involved) {
                notes.push((
                    ys.tracks[r][span.track] + TRACK_H / 2.0,
                    format!("task {} holds kmap of f{}", span.task, span.pfn),
                    format!(
                        "task {} holds a kmap of frame {} in pkmap slot {} from {} ({})",
                        span.task,
                        span.pfn,
                        row.slot,
                        step_name(tl, span.from),
                        span.at
                    ),
                ));
            }
        }
    }
    for (cpu, &(top, _)) in tl.cpus.iter().zip(cpu_rows) {
        for span in cpu.atomic.iter().filter(|s| s.involved) {
            let who = match span.by {
                AtomicBy::Task(t) => format!("t{t}"),
                AtomicBy::Irq => "irq".to_string(),
            };
            let text = match (span.remap, span.to) {
                (Some((_, pfn)), _) => format!("{who} kmap_atomic f{} → irq's f{pfn}", span.pfn),
                (None, None) => format!("{who} kmap_atomic f{}, held", span.pfn),
                (None, Some(_)) => format!("{who} kmap_atomic f{}, popped", span.pfn),
            };
            notes.push((
                top + LANE_PAD + 18.0 + TRACK_H * span.depth as f64 + TRACK_H / 2.0,
                text,
                format!(
                    "CPU {} kmap_atomic depth {}: frame {} by {}{}",
                    cpu.id,
                    span.depth,
                    span.pfn,
                    span.by,
                    span.remap.map_or(String::new(), |(_, p)| format!(
                        ", remapped to frame {p} by an interrupt"
                    ))
                ),
            ));
        }
    }
    notes
}

/// The legend's items (shape at x, y; text): the kmap items only when the run kmapped or
/// slept on the pool.
fn legend_items(tl: &Timeline) -> Vec<(LegendShape, &'static str)> {
    let mut items: Vec<(LegendShape, &'static str)> = vec![
        (LegendShape::Op, "operation, start to return"),
        (LegendShape::Holds, "holds a lock"),
        (LegendShape::Waits, "waits (lock, kmap slot, memory)"),
        (LegendShape::On, "waits on"),
    ];
    let kmaps = tl.pool.is_some() || tl.cpus.iter().any(|c| c.depths > 0);
    if kmaps {
        items.push((LegendShape::Kmap, "kmap held (pool slot, kmap_atomic)"));
        items.push((LegendShape::Clobbered, "slot remapped by an interrupt"));
    }
    items.extend([
        (LegendShape::Tlb, "TLB entry"),
        (LegendShape::Flush, "TLB flush"),
        (LegendShape::Irq, "interrupt"),
        (LegendShape::Lin, "linearization point"),
        (LegendShape::Bad, "violation, deadlock cycle"),
    ]);
    items
}

#[derive(Clone, Copy)]
enum LegendShape {
    Op,
    Holds,
    Waits,
    On,
    Kmap,
    Clobbered,
    Tlb,
    Flush,
    Irq,
    Lin,
    Bad,
}

impl LegendShape {
    /// The shape, 22 wide, in the 12-high box at (x, y).
    fn draw(self, x: f64, y: f64) -> String {
        let c = PALETTE[0];
        let (top, mid) = (y + 1.0, y + 6.0);
        match self {
            LegendShape::Op => format!(
                r#"<rect x="{x:.1}" y="{y:.1}" width="22" height="12" rx="3" fill="{c}" fill-opacity="0.25" stroke="{c}"/>"#
            ),
            LegendShape::Holds => {
                format!(r#"<rect x="{x:.1}" y="{top:.1}" width="22" height="10" fill="{c}" fill-opacity="0.85"/>"#)
            }
            LegendShape::Waits => {
                format!(r##"<rect x="{x:.1}" y="{top:.1}" width="22" height="10" fill="url(#hatch)" stroke="#888"/>"##)
            }
            LegendShape::On => format!(
                r##"<line x1="{x:.1}" y1="{mid:.1}" x2="{:.1}" y2="{mid:.1}" stroke="#666" stroke-dasharray="3 2" marker-end="url(#arrow)"/>"##,
                x + 22.0
            ),
            LegendShape::Kmap => kmap_rect(x, top, 22.0, c, false),
            LegendShape::Clobbered => format!(
                r##"<rect x="{x:.1}" y="{top:.1}" width="22" height="10" fill="url(#hatch-red)" stroke="{RED}"/>"##
            ),
            LegendShape::Tlb => {
                format!(r##"<rect x="{x:.1}" y="{top:.1}" width="22" height="10" fill="#9cc3e6" stroke="#3a78b5"/>"##)
            }
            LegendShape::Flush => format!(
                r#"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{:.1}" stroke="{RED}" stroke-width="2"/>"#,
                x + 11.0,
                x + 11.0,
                y + 12.0
            ),
            LegendShape::Irq => irq_shape(x + 11.0, y),
            LegendShape::Lin => diamond(x + 11.0, mid),
            LegendShape::Bad => format!(
                r#"<line x1="{x:.1}" y1="{mid:.1}" x2="{:.1}" y2="{mid:.1}" stroke="{RED}" stroke-width="2.5" marker-end="url(#arrow-red)"/>"#,
                x + 22.0
            ),
        }
    }
}

/// Where each legend item goes in rows of at most `width`: (x, row); and the rows.
fn legend_layout(items: &[(LegendShape, &str)], width: f64) -> (Vec<(f64, usize)>, usize) {
    let mut places = Vec::new();
    let (mut x, mut row) = (MARGIN, 0);
    for (_, text) in items {
        let w = 34.0 + text.chars().count() as f64 * 5.9;
        if x > MARGIN && x + w > width - MARGIN {
            x = MARGIN;
            row += 1;
        }
        places.push((x, row));
        x += w;
    }
    (places, row + 1)
}

/// The legend from `y` down, laid out by [`legend_layout`].
fn legend(s: &mut String, items: &[(LegendShape, &str)], places: &[(f64, usize)], y: f64) {
    for ((shape, text), &(x, row)) in items.iter().zip(places) {
        let y = y + LEGEND_ROW * row as f64;
        let _ = writeln!(
            s,
            r#"<g>{}<text x="{:.1}" y="{:.1}" class="small">{}</text></g>"#,
            shape.draw(x, y),
            x + 26.0,
            y + 10.0,
            esc(text)
        );
    }
}

/// A kmap (pool slot or kmap_atomic entry) of colour `c` from `x`, `w` wide, at `top`:
/// outlined in its colour, or red and thicker when the violation involves it.
fn kmap_rect(x: f64, top: f64, w: f64, c: &str, involved: bool) -> String {
    let (stroke, sw) = if involved { (RED, 2.2) } else { (c, 1.2) };
    format!(
        r#"<rect x="{x:.1}" y="{top:.1}" width="{w:.1}" height="{:.1}" rx="2" fill="{c}" fill-opacity="0.4" stroke="{stroke}" stroke-width="{sw}"/>"#,
        TRACK_H - 4.0
    )
}

fn irq_shape(x: f64, y: f64) -> String {
    format!(
        r#"<path d="M{:.1},{:.1} L{:.1},{:.1} L{:.1},{:.1} z" fill="{IRQ}"/>"#,
        x - 5.0,
        y,
        x + 5.0,
        y,
        x,
        y + 9.0
    )
}

fn diamond(x: f64, y: f64) -> String {
    format!(
        r##"<path d="M{x:.1},{:.1} L{:.1},{y:.1} L{x:.1},{:.1} L{:.1},{y:.1} z" fill="#222"/>"##,
        y - 4.0,
        x + 4.0,
        y + 4.0,
        x - 4.0
    )
}

/// Step numbers over the columns, gaps marked, and a faint grid down to `bottom`.
fn axis(s: &mut String, tl: &Timeline, xs: &Xs, y: f64, bottom: f64) {
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" class="lbl" text-anchor="end">step</text>"#,
        LEFT - 8.0,
        y + 12.0
    );
    let mut next_label = 0.0;
    for (c, col) in tl.columns.iter().enumerate() {
        let (x, w) = (xs.col_x[c], xs.col_w[c]);
        match *col {
            Column::Step(i) => {
                let n = tl.steps[i].n;
                // Every column whose number fits beside the last one drawn.
                let half = n.to_string().len() as f64 * 3.0 + 2.0;
                let cx = x + w / 2.0;
                if cx - half >= next_label {
                    next_label = cx + half;
                    let _ = writeln!(
                        s,
                        r#"<text x="{cx:.1}" y="{:.1}" class="small" text-anchor="middle">{n}</text>"#,
                        y + 12.0
                    );
                }
                let _ = writeln!(
                    s,
                    r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{bottom:.1}" stroke="#eee"/>"##,
                    y + 16.0
                );
            }
            Column::Gap { from, to } => {
                let (a, b) = (tl.steps[from].n, tl.steps[to].n);
                let _ = writeln!(
                    s,
                    r##"<g><title>steps {a} to {b} collapsed ({} steps that matter little here)</title><rect x="{x:.1}" y="{:.1}" width="{w:.1}" height="{:.1}" fill="url(#gap)"/><text x="{:.1}" y="{:.1}" class="small" text-anchor="middle">⋯</text></g>"##,
                    to - from + 1,
                    y + 16.0,
                    bottom - y - 16.0,
                    x + w / 2.0,
                    y + 12.0
                );
                next_label = next_label.max(x + w);
            }
        }
    }
}

fn task_lane(s: &mut String, tl: &Timeline, lane: &TaskLane, ys: &TaskYs, xs: &Xs) {
    let involved = tl.involved_tasks.contains(&lane.id);
    let c = colour(lane.id);
    let (bg, name_fill) = if involved {
        ("#fdecea", RED)
    } else {
        ("#fafafa", "#222")
    };
    let home = match lane.home {
        Some((cpu, mm)) => format!("mm {mm} · CPU {cpu}"),
        None => "never created".to_string(),
    };
    let _ = writeln!(
        s,
        r##"<g><title>task {}{}: {home}</title><rect x="0" y="{:.1}" width="{:.1}" height="{:.1}" fill="{bg}"/><rect x="0" y="{:.1}" width="5" height="{:.1}" fill="{c}"/><text x="{MARGIN}" y="{:.1}" font-size="13" font-weight="bold" fill="{name_fill}">task {}</text><text x="{:.1}" y="{:.1}" class="small">{home}{}</text><line x1="0" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#ddd"/></g>"##,
        lane.id,
        if involved { " (named by the violation)" } else { "" },
        ys.top,
        xs.end,
        ys.bottom - ys.top,
        ys.top,
        ys.bottom - ys.top,
        ys.op + 13.0,
        lane.id,
        MARGIN + 62.0,
        ys.op + 13.0,
        if involved { " · involved" } else { "" },
        ys.bottom,
        xs.end,
        ys.bottom
    );
    for op in &lane.ops {
        let x0 = xs.left(op.from);
        let x1 = op.to.map_or(xs.end, |t| xs.right(t));
        let w = (x1 - x0 - 2.0).max(3.0);
        let result = result_text(&op.result);
        let chars = ((w - 6.0) / CHAR_W).max(0.0) as usize;
        let label = [
            format!("{} {result}", op.text),
            format!("{} {result}", op.name),
            op.name.to_string(),
        ]
        .into_iter()
        .find(|l| l.chars().count() <= chars)
        .unwrap_or_else(|| fit(op.name, chars));
        let mut detail = format!(
            "task {}: {}\n{result}\nsteps {} to {}",
            lane.id,
            op.text,
            tl.steps[op.from].n,
            op.to
                .map_or("the end (never returned)".to_string(), |t| tl.steps[t].n.to_string())
        );
        for (step, what) in &op.lins {
            let _ = write!(detail, "\nlinearizes at step {}: {what}", tl.steps[*step].n);
        }
        let dash = if op.to.is_none() {
            r#" stroke-dasharray="4 3""#
        } else {
            ""
        };
        let _ = writeln!(
            s,
            r#"<g><title>{}</title><rect x="{:.1}" y="{:.1}" width="{w:.1}" height="{OP_H}" rx="3" fill="{c}" fill-opacity="{}" stroke="{c}"{dash}/><text x="{:.1}" y="{:.1}">{}</text></g>"#,
            esc(&detail),
            x0 + 1.0,
            ys.op,
            if involved { 0.35 } else { 0.2 },
            x0 + 4.0,
            ys.op + 13.0,
            esc(&label)
        );
        for (step, what) in &op.lins {
            let _ = writeln!(
                s,
                "<g><title>{}</title>{}</g>",
                esc(&format!(
                    "task {} linearizes at step {}: {what}",
                    lane.id, tl.steps[*step].n
                )),
                diamond(xs.mid(*step), ys.op)
            );
        }
    }
    if let Some(top) = ys.sleep {
        sleep_row(s, tl, lane, top, xs);
    }
    for (r, row) in lane.locks.iter().enumerate() {
        lock_row(s, tl, lane, row, &ys.tracks[r], xs);
    }
}

/// The number of the step at index `at`, or `the end`.
fn step_name(tl: &Timeline, at: usize) -> String {
    tl.steps
        .get(at)
        .map_or("the end".to_string(), |st| format!("step {}", st.n))
}

/// A task's sleeps (on the full kmap pool, for memory) as hatched spans, red when the
/// deadlock leaves it asleep.
fn sleep_row(s: &mut String, tl: &Timeline, lane: &TaskLane, top: f64, xs: &Xs) {
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" class="lbl" text-anchor="end">sleeps</text>"#,
        LEFT - 8.0,
        top + 10.5
    );
    for sleep in &lane.sleeps {
        let x0 = xs.mid(sleep.from);
        let x1 = xs.stop(sleep.to).max(x0 + 4.0);
        let detail = sleep_detail(tl, lane.id, sleep);
        let short = match sleep.kind {
            SleepKind::Kmap(pfn) => format!("kmap f{pfn}"),
            SleepKind::Memory => "memory".to_string(),
        };
        let (fill, stroke) = if sleep.involved {
            ("url(#hatch-red)", RED)
        } else {
            ("url(#hatch)", "#888")
        };
        let _ = writeln!(
            s,
            r##"<g><title>{}</title><rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{fill}" stroke="{stroke}"/><text x="{:.1}" y="{:.1}" font-size="9.5" stroke="#fff" stroke-width="3" paint-order="stroke">{}</text></g>"##,
            esc(&detail),
            top + 1.5,
            x1 - x0,
            TRACK_H - 3.0,
            x0 + 3.0,
            top + 10.0,
            esc(&fit(&short, ((x1 - x0 - 4.0) / 5.8).max(0.0) as usize))
        );
    }
}

fn sleep_detail(tl: &Timeline, task: TaskId, sleep: &Sleep) -> String {
    let what = match sleep.kind {
        SleepKind::Kmap(pfn) => format!("in kmap of frame {pfn}, every pkmap slot in use"),
        SleepKind::Memory => "for memory".to_string(),
    };
    let until = match (sleep.to, sleep.woken_by) {
        (None, _) => "the end (never woken)".to_string(),
        (Some(t), Some((w, by))) => format!(
            "{} (woken at {} by task {by}'s kunmap)",
            step_name(tl, t),
            step_name(tl, w)
        ),
        (Some(t), None) if sleep.oom => format!("{} (woken by the OOM path to fail its allocation)", step_name(tl, t)),
        (Some(t), None) => step_name(tl, t),
    };
    let mut detail = format!(
        "task {task} sleeps {what} from {} in {} to {until}",
        step_name(tl, sleep.from),
        sleep.at
    );
    if matches!(sleep.kind, SleepKind::Kmap(_)) {
        let held: Vec<String> = sleep
            .holders
            .iter()
            .map(|(slot, t, pfn)| format!("slot {slot}: frame {pfn} by task {t}"))
            .collect();
        let _ = write!(detail, "; the pool then: {}", held.join(", "));
    }
    detail
}

/// The kmap pool: a row per slot used, each kmap a span in its task's colour, and the
/// flushes (flush_all_zero_pkmaps) as dashed lines.
fn pool_lane(s: &mut String, tl: &Timeline, pool: &Pool, ys: &PoolYs, xs: &Xs) {
    let involved = pool.rows.iter().flat_map(|r| &r.spans).any(|sp| sp.involved);
    let name_fill = if involved { RED } else { "#222" };
    let name_y = ys.top + LANE_PAD + 13.0;
    let _ = writeln!(
        s,
        r##"<g><title>the persistent kmap pool (pkmap): {} slots; each kmap() a span on its slot from kmap to kunmap, in its task's colour</title><rect x="0" y="{:.1}" width="{:.1}" height="{:.1}" fill="#f8f5fb"/><text x="{MARGIN}" y="{name_y:.1}" font-size="13" font-weight="bold" fill="{name_fill}">kmap pool</text><text x="{:.1}" y="{name_y:.1}" class="small">{} slot{}{}</text><line x1="0" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#ddd"/></g>"##,
        pool.size,
        ys.top,
        xs.end,
        ys.bottom - ys.top,
        MARGIN + 90.0,
        pool.size,
        if pool.size == 1 { "" } else { "s" },
        if involved { " · involved" } else { "" },
        ys.bottom,
        xs.end,
        ys.bottom
    );
    for (r, row) in pool.rows.iter().enumerate() {
        let tracks = &ys.tracks[r];
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" class="lbl" text-anchor="end">pkmap slot {}</text>"#,
            LEFT - 8.0,
            tracks[0] + 10.5,
            row.slot
        );
        for span in &row.spans {
            let x0 = xs.mid(span.from);
            let x1 = xs.stop(span.to).max(x0 + 4.0);
            let top = tracks[span.track] + 2.0;
            let mut detail = format!(
                "task {} holds a kmap of frame {} in pkmap slot {} from {} ({}) to {}",
                span.task,
                span.pfn,
                row.slot,
                step_name(tl, span.from),
                span.at,
                span.to.map_or("the end".to_string(), |t| step_name(tl, t))
            );
            if !span.woken.is_empty() {
                let woken: Vec<String> = span.woken.iter().map(|t| format!("task {t}")).collect();
                let _ = write!(detail, "; its kunmap wakes {}", woken.join(", "));
            }
            let _ = writeln!(
                s,
                r#"<g><title>{}</title>{}<text x="{:.1}" y="{:.1}" font-size="9.5">{}</text></g>"#,
                esc(&detail),
                kmap_rect(x0, top, x1 - x0, colour(span.task), span.involved),
                x0 + 2.0,
                top + 8.5,
                esc(&fit(
                    &format!("f{} t{}", span.pfn, span.task),
                    ((x1 - x0 - 3.0) / 5.8).max(0.0) as usize
                ))
            );
        }
    }
    let (y0, y1) = (ys.top + LANE_PAD + 18.0, ys.bottom - LANE_PAD);
    for flush in &pool.flushes {
        let (at, task) = (flush.at, flush.task);
        let x = xs.mid(at) + 2.0;
        let freed: Vec<String> = flush
            .freed
            .iter()
            .map(|(slot, pfn)| format!("slot {slot} (frame {pfn})"))
            .collect();
        let _ = writeln!(
            s,
            r##"<g><title>{}: task {task}'s kmap wraps around the pool: flush_all_zero_pkmaps {} and flushes every CPU's kernel TLB of the pool</title><line x1="{x:.1}" y1="{y0:.1}" x2="{x:.1}" y2="{y1:.1}" stroke="#8e44ad" stroke-width="1.5" stroke-dasharray="2 2"/></g>"##,
            step_name(tl, at),
            if freed.is_empty() {
                "frees no slot".to_string()
            } else {
                format!("frees {}", freed.join(", "))
            }
        );
    }
}

/// A CPU's kmap_atomic stack from `y`: a track per depth, each entry that lasted a span in
/// its holder's colour (an interrupt's orange), a remap by an interrupt hatched red from
/// where it happened, and entries pushed and popped at once as thin marks.
fn atomic_rows(s: &mut String, tl: &Timeline, cpu: usize, y: f64, xs: &Xs) {
    let lane = &tl.cpus[cpu];
    for d in 0..lane.depths {
        let involved = lane.atomic.iter().any(|sp| sp.depth == d && sp.involved);
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" class="lbl" text-anchor="end"{}>kmap_atomic depth {d}</text>"#,
            LEFT - 8.0,
            y + TRACK_H * d as f64 + 10.5,
            if involved {
                format!(r#" fill="{RED}" font-weight="bold""#)
            } else {
                String::new()
            }
        );
    }
    for span in &lane.atomic {
        atomic_span(s, tl, lane.id as usize, span, y + TRACK_H * span.depth as f64, xs);
    }
    for (&(at, depth, irq), mark) in &lane.marks {
        let top = y + TRACK_H * depth as f64;
        // A task's mark is a tick in its colour, an interrupt handler's the interrupt's
        // triangle.
        let (shape, who) = if irq {
            let who = format!("the interrupt handler before {}", step_name(tl, at));
            (irq_shape(xs.left(at), top + 2.0), who)
        } else {
            let t = tl.steps[at].task;
            let tick = format!(
                r#"<rect x="{:.1}" y="{:.1}" width="3" height="{:.1}" fill="{}"/>"#,
                xs.mid(at) - 1.5,
                top + 2.0,
                TRACK_H - 4.0,
                colour(t)
            );
            (tick, format!("{} (task {t})", step_name(tl, at)))
        };
        let _ = writeln!(
            s,
            "<g><title>{}</title>{shape}</g>",
            esc(&format!(
                "CPU {} kmap_atomic depth {depth}, pushed and popped within {who}: {}",
                lane.id,
                mark.entries.join("; ")
            ))
        );
    }
}

fn atomic_span(s: &mut String, tl: &Timeline, cpu: usize, span: &AtomicSpan, top: f64, xs: &Xs) {
    let (c, short) = match span.by {
        AtomicBy::Task(t) => (colour(t), format!("f{} t{t}", span.pfn)),
        AtomicBy::Irq => (IRQ, format!("f{} irq", span.pfn)),
    };
    let x0 = match span.by {
        AtomicBy::Task(_) => xs.mid(span.from),
        AtomicBy::Irq => xs.left(span.from),
    };
    let x1 = xs.stop(span.to).max(x0 + 4.0);
    let detail = format!(
        "CPU {cpu} kmap_atomic depth {}: frame {} by {}, pushed at {} in {}, {}",
        span.depth,
        span.pfn,
        span.by,
        step_name(tl, span.from),
        span.at,
        span.to.map_or("still held at the end".to_string(), |t| format!(
            "popped at {}",
            step_name(tl, t)
        ))
    );
    let _ = writeln!(
        s,
        r#"<g><title>{}</title>{}<text x="{:.1}" y="{:.1}" font-size="9.5">{}</text></g>"#,
        esc(&detail),
        kmap_rect(x0, top + 2.0, x1 - x0, c, span.involved),
        x0 + 2.0,
        top + 10.5,
        esc(&fit(&short, ((x1 - x0 - 3.0) / 5.8).max(0.0) as usize))
    );
    if let Some((at, pfn)) = span.remap {
        let xr = xs.left(at).max(x0);
        let w = (x1 - xr).max(4.0);
        let _ = writeln!(
            s,
            r##"<g><title>{}</title><rect x="{xr:.1}" y="{:.1}" width="{w:.1}" height="{:.1}" fill="url(#hatch-red)" stroke="{RED}" stroke-width="1.5"/><text x="{:.1}" y="{:.1}" font-size="9.5" font-weight="bold" fill="{RED}" stroke="#fff" stroke-width="3" paint-order="stroke">{}</text></g>"##,
            esc(&format!(
                "the interrupt handler on CPU {cpu} before {} remaps the slot of depth {}: {}'s kmap_atomic of frame {} reaches frame {pfn} from then on",
                step_name(tl, at),
                span.depth,
                span.by,
                span.pfn
            )),
            top + 2.0,
            TRACK_H - 4.0,
            xr + 3.0,
            top + 10.5,
            esc(&fit(&format!("→f{pfn}"), ((w - 4.0) / 5.8).max(0.0) as usize))
        );
    }
}

fn lock_row(s: &mut String, tl: &Timeline, lane: &TaskLane, row: &LockRow, tracks: &[f64], xs: &Xs) {
    let c = colour(lane.id);
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" class="lbl" text-anchor="end">{}</text>"#,
        LEFT - 8.0,
        tracks[0] + 10.5,
        esc(&fit(&row.label, ((LEFT - 30.0) / 6.4) as usize))
    );
    for (span, track) in &row.spans {
        let in_cycle = tl
            .violation
            .as_ref()
            .is_some_and(|v| v.cycle.iter().any(|(t, l, _)| *t == lane.id && l == &span.lock));
        let y = tracks[*track] + 1.5;
        let x0 = xs.mid(span.from);
        let x1 = xs.stop(span.to).max(x0 + 4.0);
        let until = span
            .to
            .map_or("the end".to_string(), |t| format!("step {}", tl.steps[t].n));
        let (fill, stroke, detail) = match span.kind {
            SpanKind::Holds(mode) => {
                let how = if mode == LockMode::Read { "read" } else { "write" };
                (
                    c.to_string(),
                    "none".to_string(),
                    format!(
                        "task {} holds {} ({how}) from step {} ({}) to {until}",
                        lane.id, span.lock, tl.steps[span.from].n, span.at
                    ),
                )
            }
            SpanKind::Waits(mode) => {
                let how = if mode == LockMode::Read { "read" } else { "write" };
                let held: Vec<String> = span.holders.iter().map(|h| format!("task {h}")).collect();
                let open = span.to.is_none();
                (
                    if in_cycle && open {
                        "url(#hatch-red)"
                    } else {
                        "url(#hatch)"
                    }
                    .to_string(),
                    if in_cycle && open { RED } else { "#888" }.to_string(),
                    format!(
                        "task {} waits for {} ({how}) from step {} in {} to {until}; held then by {}",
                        lane.id,
                        span.lock,
                        tl.steps[span.from].n,
                        span.at,
                        if held.is_empty() {
                            "nobody (queued behind waiters)".to_string()
                        } else {
                            held.join(", ")
                        }
                    ),
                )
            }
        };
        let opacity = match span.kind {
            SpanKind::Holds(LockMode::Read) => 0.45,
            _ => 0.85,
        };
        let _ = writeln!(
            s,
            r#"<g><title>{}</title><rect x="{x0:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{fill}" fill-opacity="{opacity}" stroke="{stroke}"/></g>"#,
            esc(&detail),
            x1 - x0,
            TRACK_H - 3.0
        );
    }
}

fn cpu_lane(s: &mut String, tl: &Timeline, cpu: usize, top: f64, bottom: f64, xs: &Xs) {
    let lane = &tl.cpus[cpu];
    let involved = tl.involved_cpus.contains(&lane.id);
    let (bg, name_fill) = if involved {
        ("#fdecea", RED)
    } else {
        ("#f3f6fa", "#222")
    };
    let run_y = top + LANE_PAD;
    let _ = writeln!(
        s,
        r##"<g><title>CPU {}: which task each step ran, interrupts, and its TLB entries of the pages that matter</title><rect x="0" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{bg}"/><text x="{MARGIN}" y="{:.1}" font-size="13" font-weight="bold" fill="{name_fill}">CPU {}</text><text x="{:.1}" y="{:.1}" class="small">runs{}</text><line x1="0" y1="{bottom:.1}" x2="{:.1}" y2="{bottom:.1}" stroke="#ccc"/></g>"##,
        lane.id,
        xs.end,
        bottom - top,
        run_y + 13.0,
        lane.id,
        MARGIN + 62.0,
        run_y + 13.0,
        match (involved, lane.tlb.is_empty()) {
            (true, true) => " · involved · no TLB entries",
            (true, false) => " · involved",
            (false, true) => " · no TLB entries",
            (false, false) => "",
        },
        xs.end
    );
    for (c, col) in tl.columns.iter().enumerate() {
        let Column::Step(i) = *col else { continue };
        let step = &tl.steps[i];
        if step.cpu != lane.id {
            continue;
        }
        let (x, w) = (xs.col_x[c], xs.col_w[c]);
        let detail: Vec<&str> = step.lines.iter().map(String::as_str).take(40).collect();
        let more = step.lines.len().saturating_sub(40);
        let _ = writeln!(
            s,
            r##"<g><title>{}{}</title><rect x="{:.1}" y="{run_y:.1}" width="{:.1}" height="16" rx="2" fill="{}"/><text x="{:.1}" y="{:.1}" fill="#fff" font-size="10" text-anchor="middle">{}</text></g>"##,
            esc(&detail.join("\n")),
            if more > 0 {
                format!("\n… {more} more events")
            } else {
                String::new()
            },
            x + 1.0,
            w - 2.0,
            colour(step.task),
            x + w / 2.0,
            run_y + 12.0,
            step.task
        );
    }
    for irq in &lane.irqs {
        let x = xs.left(irq.at);
        let over = irq.current.map_or("idle".to_string(), |t| format!("over task {t}"));
        let mut detail = format!("irq on CPU {} before {}, {over}", lane.id, step_name(tl, irq.at));
        for line in irq.lines.iter().skip(1) {
            let _ = write!(detail, "\n{line}");
        }
        let _ = writeln!(s, "<g><title>{}</title>{}</g>", esc(&detail), irq_shape(x, run_y - 4.0));
    }
    let mut y = run_y + 18.0;
    atomic_rows(s, tl, cpu, y, xs);
    y += TRACK_H * lane.depths as f64;
    for row in &lane.tlb {
        let label = format!("TLB mm {} {:#x}", row.mm, row.va);
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" class="lbl" text-anchor="end"{}>{}</text>"#,
            LEFT - 8.0,
            y + 10.5,
            if row.involved {
                format!(r#" fill="{RED}" font-weight="bold""#)
            } else {
                String::new()
            },
            esc(&label)
        );
        for span in &row.spans {
            let x0 = xs.mid(span.from);
            let x1 = xs.stop(span.to).max(x0 + 4.0);
            let until = span
                .to
                .map_or("the end".to_string(), |t| format!("step {}", tl.steps[t].n));
            let frame = frame_name(span.pfn);
            let short = frame
                .strip_prefix("frame ")
                .map_or("zero".to_string(), |n| format!("f{n}"));
            let text = format!("{short}{}", if span.write { " w" } else { "" });
            let stroke = if row.involved { RED } else { "#3a78b5" };
            let _ = writeln!(
                s,
                r##"<g><title>{}</title><rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#9cc3e6" stroke="{stroke}"/><text x="{:.1}" y="{:.1}" font-size="9.5">{}</text></g>"##,
                esc(&format!(
                    "CPU {} caches mm {} {:#x} -> {frame}{} from step {} to {until}",
                    lane.id,
                    row.mm,
                    row.va,
                    if span.write { " (writable)" } else { "" },
                    tl.steps[span.from].n
                )),
                y + 1.5,
                x1 - x0,
                TRACK_H - 3.0,
                x0 + 2.0,
                y + 10.0,
                esc(&fit(&text, ((x1 - x0 - 3.0) / 5.8).max(0.0) as usize))
            );
        }
        for &(at, by) in &row.flushes {
            let x = xs.mid(at);
            let _ = writeln!(
                s,
                r#"<g><title>step {}: TLB flush of mm {} {:#x} on CPU {} in {by}</title><line x1="{x:.1}" y1="{y:.1}" x2="{x:.1}" y2="{:.1}" stroke="{RED}" stroke-width="2"/></g>"#,
                tl.steps[at].n,
                row.mm,
                row.va,
                lane.id,
                y + TRACK_H
            );
        }
        y += TRACK_H;
    }
    if lane.tlb_hidden > 0 {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" class="small" text-anchor="end">+{} more TLB pages</text>"#,
            LEFT - 8.0,
            y + 10.0,
            lane.tlb_hidden
        );
    }
}

/// A thin arrow from each wait (where it begins) to the tasks that held the lock then.
fn wait_arrows(s: &mut String, tl: &Timeline, rows: &[TaskYs], xs: &Xs) {
    for (lane, ys) in tl.tasks.iter().zip(rows) {
        for (r, row) in lane.locks.iter().enumerate() {
            for (span, track) in &row.spans {
                if !matches!(span.kind, SpanKind::Waits(_)) {
                    continue;
                }
                let x = xs.mid(span.from);
                let y0 = ys.tracks[r][*track] + TRACK_H / 2.0;
                for &h in &span.holders {
                    let hy = span_y(
                        &tl.tasks[h as usize],
                        &rows[h as usize],
                        &span.lock.name,
                        false,
                        span.from,
                    )
                    .unwrap_or(rows[h as usize].op + OP_H / 2.0);
                    let y1 = if hy > y0 { hy - 5.0 } else { hy + 5.0 };
                    let _ = writeln!(
                        s,
                        r##"<g><title>task {} waits for {} held by task {h}</title><line x1="{x:.1}" y1="{y0:.1}" x2="{:.1}" y2="{y1:.1}" stroke="#666" stroke-width="1.2" stroke-dasharray="3 2" marker-end="url(#arrow)"/></g>"##,
                        lane.id,
                        esc(&span.lock.name),
                        x + 6.0
                    );
                }
            }
        }
    }
}

/// An arrow from each sleep on the full kmap pool (where it begins) to the kmaps that held
/// the pool's slots then; red when the deadlock leaves the sleeper asleep.
fn sleep_arrows(s: &mut String, tl: &Timeline, rows: &[TaskYs], pool: &Pool, pys: &PoolYs, xs: &Xs) {
    for (lane, ys) in tl.tasks.iter().zip(rows) {
        let Some(top) = ys.sleep else { continue };
        for sleep in &lane.sleeps {
            if !matches!(sleep.kind, SleepKind::Kmap(_)) {
                continue;
            }
            let (x, y0) = (xs.mid(sleep.from), top + TRACK_H / 2.0);
            let (stroke, marker, width) = if sleep.involved {
                (RED, "arrow-red", 1.8)
            } else {
                ("#666", "arrow", 1.2)
            };
            for (k, &(slot, task, pfn)) in sleep.holders.iter().enumerate() {
                let Some(y1) = pool_span_y(pool, pys, slot, task, pfn, sleep.from) else {
                    continue;
                };
                let y1 = if y1 > y0 { y1 - 5.0 } else { y1 + 5.0 };
                let _ = writeln!(
                    s,
                    r##"<g><title>task {} sleeps for a pkmap slot: slot {slot} is held by task {task} (frame {pfn})</title><line x1="{x:.1}" y1="{y0:.1}" x2="{:.1}" y2="{y1:.1}" stroke="{stroke}" stroke-width="{width}" stroke-dasharray="3 2" marker-end="url(#{marker})"/></g>"##,
                    lane.id,
                    x + 8.0 + 10.0 * k as f64
                );
            }
        }
    }
}

/// The deadlock's cycle: a red arrow from each waiter's wait, at the end of the run, to the
/// task it waits on (its hold of the lock, or its own wait ahead in the queue).
fn cycle_arrows(s: &mut String, tl: &Timeline, rows: &[TaskYs], xs: &Xs) {
    let Some(v) = &tl.violation else { return };
    let end = tl.steps.len();
    for (k, (t, lock, on)) in v.cycle.iter().enumerate() {
        let (t, on) = (*t as usize, *on as usize);
        let Some(y0) = span_y(&tl.tasks[t], &rows[t], &lock.name, true, end) else {
            continue;
        };
        let target = &tl.tasks[on];
        let y1 = span_y(target, &rows[on], &lock.name, false, end)
            .or_else(|| span_y(target, &rows[on], &lock.name, true, end))
            .unwrap_or(rows[on].op + OP_H / 2.0);
        let x = xs.end + 6.0;
        let bulge = x + 40.0 + CYCLE_STEP * k as f64;
        let holds = target
            .locks
            .iter()
            .flat_map(|r| &r.spans)
            .any(|(sp, _)| &sp.lock == lock && sp.to.is_none() && matches!(sp.kind, SpanKind::Holds(_)));
        let how = if holds { "held by" } else { "queued behind" };
        let _ = writeln!(
            s,
            r##"<g><title>task {t} waits for {} {how} task {on}</title><path d="M{:.1},{y0:.1} C{bulge:.1},{y0:.1} {bulge:.1},{y1:.1} {x:.1},{y1:.1}" fill="none" stroke="{RED}" stroke-width="2.2" marker-end="url(#arrow-red)"/><text x="{:.1}" y="{:.1}" font-size="10" fill="{RED}" stroke="#fff" stroke-width="3" paint-order="stroke">{t}→{on}</text></g>"##,
            esc(&lock.name),
            x - 4.0,
            x + 0.75 * (bulge - x) - 8.0,
            (y0 + y1) / 2.0 + 3.5
        );
    }
}

//! Small SVG charts for the HTML report: a line chart over dates and a heat map, as text; and
//! the round ticks of a value axis, which the dashboard's charts take from the API too.
//!
//! Hand-written rather than a charting crate: the report needs two chart shapes, and inline
//! SVG with CSS classes keeps the file self-contained and its look in one stylesheet.

use std::fmt::Write;

use chrono::NaiveDate;
use lodestar_core::format;

/// One line of a line chart.
#[derive(Debug, Clone)]
pub struct Line {
    pub label: String,
    /// The CSS class that styles it (`actual`, `partial`, `target`, `pace`, `trend`).
    pub class: &'static str,
    pub points: Vec<(NaiveDate, f64)>,
}

const WIDTH: f64 = 880.0;
const HEIGHT: f64 = 300.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 20.0;
const BOTTOM: f64 = 40.0;

/// A line chart of `lines` over dates, with y ticks, a few date labels and a legend.
pub fn line_chart(title: &str, lines: &[Line]) -> String {
    let points = lines.iter().flat_map(|l| l.points.iter());
    let (mut x0, mut x1, mut y1) = (i64::MAX, i64::MIN, f64::MIN);
    let mut y0 = 0.0_f64;
    for (date, value) in points {
        let day = days(*date);
        x0 = x0.min(day);
        x1 = x1.max(day);
        y0 = y0.min(*value);
        y1 = y1.max(*value);
    }
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" xmlns="http://www.w3.org/2000/svg"><title>{}</title>"#,
        escape(title)
    );
    if x0 > x1 {
        svg.push_str(r#"<text x="20" y="40">no data</text></svg>"#);
        return svg;
    }
    if y1 <= y0 {
        y1 = y0 + 1.0;
    }
    let (ticks, step) = nice_ticks(y0, y1);
    y1 = y1.max(ticks.last().copied().unwrap_or(y1));
    y0 = y0.min(ticks.first().copied().unwrap_or(y0));
    let span_x = (x1 - x0).max(1) as f64;
    let px = |d: NaiveDate| LEFT + (days(d) - x0) as f64 / span_x * (WIDTH - LEFT - RIGHT);
    let py = |v: f64| TOP + (y1 - v) / (y1 - y0) * (HEIGHT - TOP - BOTTOM);
    for tick in &ticks {
        let y = py(*tick);
        let _ = write!(
            svg,
            r#"<line class="grid" x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            tick_label(*tick, step)
        );
    }
    // Up to six date labels, evenly spread over the dates that have points.
    let mut dates: Vec<NaiveDate> = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.0))
        .collect();
    dates.sort();
    dates.dedup();
    let every = dates.len().div_ceil(6).max(1);
    for (i, date) in dates.iter().enumerate() {
        if i % every == 0 || i + 1 == dates.len() && dates.len() <= 6 {
            // A label at the right edge ends there rather than run out of the picture.
            let anchor = if px(*date) > WIDTH - RIGHT - 40.0 {
                "end"
            } else {
                "middle"
            };
            let _ = write!(
                svg,
                r#"<text class="tick" x="{:.1}" y="{:.1}" text-anchor="{anchor}">{date}</text>"#,
                px(*date),
                HEIGHT - BOTTOM + 18.0
            );
        }
    }
    let _ = write!(
        svg,
        r#"<line class="axis" x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}"/>"#,
        WIDTH - RIGHT,
        py(y0),
        py(y0)
    );
    for line in lines {
        let path: Vec<String> = line
            .points
            .iter()
            .map(|(d, v)| format!("{:.1},{:.1}", px(*d), py(*v)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline class="{}" points="{}"><title>{}</title></polyline>"#,
            line.class,
            path.join(" "),
            escape(&line.label)
        );
        if matches!(line.class, "actual" | "partial") {
            // A partial line starts at the last complete point, already drawn.
            let skip = usize::from(line.class == "partial");
            for (d, v) in line.points.iter().skip(skip) {
                let _ = write!(
                    svg,
                    r#"<circle class="{}" cx="{:.1}" cy="{:.1}" r="2.5"><title>{d}: {}</title></circle>"#,
                    line.class,
                    px(*d),
                    py(*v),
                    format::number(*v)
                );
            }
        }
    }
    // The legend, top left inside the plot.
    for (i, line) in lines.iter().enumerate() {
        let x = LEFT + 10.0 + 190.0 * i as f64;
        let _ = write!(
            svg,
            r#"<line class="{}" x1="{x:.1}" x2="{:.1}" y1="{TOP}" y2="{TOP}"/><text class="legend" x="{:.1}" y="{:.1}">{}</text>"#,
            line.class,
            x + 20.0,
            x + 25.0,
            TOP + 4.0,
            escape(&line.label)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// One cell of a heat map: its row, its column, the value coloured (0 to 1) and its text.
#[derive(Debug, Clone)]
pub struct HeatCell {
    pub row: usize,
    pub column: usize,
    pub value: Option<f64>,
    pub text: String,
    /// Extra attributes, already escaped (e.g. `data-cohort="2026-03-02"`).
    pub attributes: String,
}

/// A heat map: rows × columns of cells shaded by value; cells without a value stay blank.
pub fn heat_map(title: &str, rows: &[String], columns: &[String], cells: &[HeatCell]) -> String {
    const CELL_W: f64 = 46.0;
    const CELL_H: f64 = 20.0;
    const LABEL_W: f64 = 150.0;
    const HEAD_H: f64 = 24.0;
    let width = LABEL_W + CELL_W * columns.len() as f64 + 10.0;
    let height = HEAD_H + CELL_H * rows.len() as f64 + 10.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="heatmap" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" xmlns="http://www.w3.org/2000/svg"><title>{}</title>"#,
        escape(title)
    );
    for (j, column) in columns.iter().enumerate() {
        let _ = write!(
            svg,
            r#"<text class="tick" x="{:.1}" y="16" text-anchor="middle">{}</text>"#,
            LABEL_W + CELL_W * (j as f64 + 0.5),
            escape(column)
        );
    }
    for (i, row) in rows.iter().enumerate() {
        let _ = write!(
            svg,
            r#"<text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LABEL_W - 8.0,
            HEAD_H + CELL_H * (i as f64 + 0.7),
            escape(row)
        );
    }
    for cell in cells {
        let (x, y) = (
            LABEL_W + CELL_W * cell.column as f64,
            HEAD_H + CELL_H * cell.row as f64,
        );
        let Some(value) = cell.value else {
            continue;
        };
        let share = value.clamp(0.0, 1.0);
        // White to a deep blue; text turns white on the dark half.
        let channel = |from: f64, to: f64| (from + (to - from) * share).round() as u8;
        let fill = format!(
            "rgb({},{},{})",
            channel(247.0, 8.0),
            channel(251.0, 69.0),
            channel(255.0, 148.0)
        );
        let ink = if share > 0.5 { "#fff" } else { "#111" };
        let _ = write!(
            svg,
            r#"<g class="cell" {}><rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{fill}"/><text x="{:.1}" y="{:.1}" text-anchor="middle" fill="{ink}">{}</text></g>"#,
            cell.attributes,
            CELL_W - 1.0,
            CELL_H - 1.0,
            x + CELL_W / 2.0,
            y + CELL_H * 0.7,
            escape(&cell.text)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// About five round ticks covering `low..=high`, and their step.
pub fn nice_ticks(low: f64, high: f64) -> (Vec<f64>, f64) {
    let raw = (high - low) / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    let first = (low / step).floor() as i64;
    let last = (high / step).ceil() as i64;
    let ticks = (first..=last).map(|i| i as f64 * step).collect();
    (ticks, step)
}

/// A tick's text: whole numbers as [`format::number`], finer steps with the decimals they need.
pub fn tick_label(value: f64, step: f64) -> String {
    if step >= 1.0 {
        format::number(value.round())
    } else {
        let decimals = (-step.log10().floor()) as usize + 1;
        format!("{value:.decimals$}")
    }
}

fn days(date: NaiveDate) -> i64 {
    date.signed_duration_since(NaiveDate::MIN).num_days()
}

/// Text made safe inside HTML and SVG elements and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        let (ticks, step) = nice_ticks(0.0, 3_480.0);
        assert_eq!(step, 1_000.0);
        assert_eq!(ticks, [0.0, 1_000.0, 2_000.0, 3_000.0, 4_000.0]);
        let (ticks, step) = nice_ticks(0.0, 0.23);
        assert_eq!(step, 0.05);
        assert_eq!(ticks.len(), 6);
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            escape(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}

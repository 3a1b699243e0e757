//! The page's charts: SVG drawn with plotters and inlined, each with a
//! legend beside the plot.

use std::fmt::Write as _;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::html::esc;
use crate::error::{Error, Result};

pub(super) type Drawn = std::result::Result<(), Box<dyn std::error::Error + Send + Sync>>;

pub(super) const COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(127, 127, 127),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(23, 190, 207),
];

pub(super) fn colour(i: usize) -> RGBColor {
    COLOURS[i % COLOURS.len()]
}

/// A drawn chart: the SVG and its legend (HTML beside the plot, where it
/// hides no data).
pub(super) struct Chart {
    pub(super) svg: String,
    pub(super) legend: String,
}

/// How a series is marked in the legend.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Mark {
    Line,
    Dot,
}

pub(super) fn legend(names: &[&str], mark: Mark) -> String {
    if names.len() < 2 {
        return String::new();
    }
    let mut h = String::from("<div class=\"legend\">");
    for (i, name) in names.iter().enumerate() {
        let c = colour(i);
        let _ = write!(
            h,
            "<span><i class=\"{}\" style=\"background:#{:02x}{:02x}{:02x}\"></i>{}</span>",
            if mark == Mark::Dot { "dot" } else { "line" },
            c.0,
            c.1,
            c.2,
            esc(name)
        );
    }
    h.push_str("</div>");
    h
}

pub(super) fn figure(h: &mut String, name: &str, caption: &str, chart: &Chart) {
    let _ = write!(
        h,
        "<figure class=\"chart\" data-chart=\"{}\">{}{}<figcaption>{}</figcaption></figure>",
        esc(name),
        chart.legend,
        chart.svg,
        esc(caption)
    );
}

pub(super) fn svg(size: (u32, u32), draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Drawn) -> Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        let drawn = root
            .fill(&WHITE)
            .map_err(|e| e.into())
            .and_then(|_| draw(&root))
            .and_then(|_| root.present().map_err(|e| e.into()));
        drawn.map_err(|e| Error::Internal(format!("drawing a report chart: {e}")))?;
    }
    Ok(out)
}

pub(super) fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) =
        values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let lo = lo.min(0.0);
    let hi = if hi > lo { hi + (hi - lo) * 0.08 } else { lo + 1.0 };
    (lo, hi)
}

/// An axis number, short: 5000000 → 5M, 12500 → 12.5k, 10.0 → 10,
/// 0.0500 → 0.05.
pub(super) fn tick(v: &f64) -> String {
    let a = v.abs();
    let (x, unit, places) = if a >= 1e6 {
        (v / 1e6, "M", 2)
    } else if a >= 1e4 {
        (v / 1e3, "k", 1)
    } else if a >= 1.0 {
        (*v, "", 3)
    } else {
        (*v, "", 4)
    };
    let mut s = format!("{x:.places$}");
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    if s == "-0" {
        s = "0".into();
    }
    s + unit
}

/// Pixels for the labels of a category axis: as wide as the longest label.
pub(super) fn label_width(names: &[String]) -> u32 {
    let longest = names.iter().map(|n| n.chars().count()).max().unwrap_or(0) as u32;
    (longest * 7 + 16).clamp(60, 320)
}

/// The label of a category on a segmented axis.
pub(super) fn category(names: &[String]) -> impl Fn(&SegmentValue<i32>) -> String + '_ {
    move |v| match v {
        SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => names.get(*i as usize).cloned().unwrap_or_default(),
        SegmentValue::Last => String::new(),
    }
}

pub(super) fn names_of<T>(series: &[(String, T)]) -> Vec<&str> {
    series.iter().map(|s| s.0.as_str()).collect()
}

/// Lines over a numeric x, one per named series.
pub(super) fn lines_chart(y_desc: &str, x_desc: &str, series: &[(String, Vec<(f64, f64)>)]) -> Result<Chart> {
    let xs = bounds(series.iter().flat_map(|s| s.1.iter().map(|p| p.0)));
    let (x0, x1) = (series.iter().flat_map(|s| s.1.iter().map(|p| p.0)).fold(f64::INFINITY, f64::min), xs.1);
    let x0 = if x0.is_finite() { x0 - (x1 - x0).max(1.0) * 0.04 } else { 0.0 };
    let ys = bounds(series.iter().flat_map(|s| s.1.iter().map(|p| p.1)));
    let svg = svg((720, 340), |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, ys.0..ys.1)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .light_line_style(WHITE)
            .draw()?;
        for (i, (_, pts)) in series.iter().enumerate() {
            let c = colour(i);
            chart.draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))?;
            chart.draw_series(pts.iter().map(|p| Circle::new(*p, 3, c.filled())))?;
        }
        Ok(())
    })?;
    Ok(Chart { svg, legend: legend(&names_of(series), Mark::Line) })
}

/// One dot per (category, series) on a horizontal value axis.
pub(super) fn dots_chart(x_desc: &str, names: &[String], series: &[(String, Vec<(usize, f64)>)]) -> Result<Chart> {
    let xs = bounds(series.iter().flat_map(|s| s.1.iter().map(|p| p.1)));
    let n = names.len().max(1) as i32;
    let height = 60 + 26 * names.len() as u32;
    let svg = svg((720, height.max(160)), |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(label_width(names))
            .build_cartesian_2d(xs.0..xs.1, (0..(n - 1).max(1)).into_segmented())?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .x_label_formatter(&tick)
            .y_labels(names.len())
            .y_label_formatter(&category(names))
            .light_line_style(WHITE)
            .draw()?;
        for (i, (_, pts)) in series.iter().enumerate() {
            let c = colour(i);
            chart.draw_series(
                pts.iter().map(|(s, v)| Circle::new((*v, SegmentValue::CenterOf(*s as i32)), 5, c.filled())),
            )?;
        }
        Ok(())
    })?;
    Ok(Chart { svg, legend: legend(&names_of(series), Mark::Dot) })
}

/// Lines over categories (dates) on the x axis; at most 8 of them labelled
/// (a date label is about 65 pixels wide).
pub(super) fn dots_over(y_desc: &str, names: &[String], series: &[(String, Vec<(usize, f64)>)]) -> Result<Chart> {
    let ys = bounds(series.iter().flat_map(|s| s.1.iter().map(|p| p.1)));
    let n = names.len().max(1) as i32;
    let svg = svg((720, 340), |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d((0..(n - 1).max(1)).into_segmented(), ys.0..ys.1)?;
        chart
            .configure_mesh()
            .y_desc(y_desc)
            .x_labels(names.len().min(8))
            .x_label_formatter(&category(names))
            .y_label_formatter(&tick)
            .light_line_style(WHITE)
            .draw()?;
        for (i, (_, pts)) in series.iter().enumerate() {
            let c = colour(i);
            let at = |(s, v): &(usize, f64)| (SegmentValue::CenterOf(*s as i32), *v);
            chart.draw_series(LineSeries::new(pts.iter().map(at), c.stroke_width(2)))?;
            chart.draw_series(pts.iter().map(|p| Circle::new(at(p), 4, c.filled())))?;
        }
        Ok(())
    })?;
    Ok(Chart { svg, legend: legend(&names_of(series), Mark::Line) })
}

/// Vertical bars over ordered bins (a histogram); at most 8 bins labelled.
pub(super) fn bars_chart(y_desc: &str, x_desc: &str, labels: &[String], bars: &[(usize, f64)]) -> Result<Chart> {
    let ys = bounds(bars.iter().map(|b| b.1));
    let n = labels.len().max(1) as i32;
    let svg = svg((720, 340), |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d((0..(n - 1).max(1)).into_segmented(), 0.0..ys.1)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_labels(labels.len().min(8))
            .x_label_formatter(&category(labels))
            .y_label_formatter(&tick)
            .light_line_style(WHITE)
            .draw()?;
        // Drawn in index order (plotters' Histogram keeps its bars in a
        // HashMap, so the page would change from run to run).
        let c = colour(0);
        chart.draw_series(bars.iter().map(|(i, v)| {
            let i = *i as i32;
            let right = if i + 1 < n { SegmentValue::Exact(i + 1) } else { SegmentValue::Last };
            let mut r = Rectangle::new([(SegmentValue::Exact(i), *v), (right, 0.0)], c.mix(0.8).filled());
            r.set_margin(0, 0, 2, 2);
            r
        }))?;
        Ok(())
    })?;
    Ok(Chart { svg, legend: String::new() })
}

/// Horizontal bars, one per named category (labels of any length stay
/// readable).
pub(super) fn hbars_chart(x_desc: &str, labels: &[String], values: &[f64]) -> Result<Chart> {
    let xs = bounds(values.iter().copied());
    let n = labels.len().max(1) as i32;
    let height = 60 + 26 * labels.len() as u32;
    let svg = svg((720, height.max(160)), |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(label_width(labels))
            .build_cartesian_2d(0.0..xs.1, (0..(n - 1).max(1)).into_segmented())?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_desc(x_desc)
            .x_label_formatter(&tick)
            .y_labels(labels.len())
            .y_label_formatter(&category(labels))
            .light_line_style(WHITE)
            .draw()?;
        let c = colour(0);
        chart.draw_series(values.iter().enumerate().map(|(i, v)| {
            let i = i as i32;
            let top = if i + 1 < n { SegmentValue::Exact(i + 1) } else { SegmentValue::Last };
            let mut r = Rectangle::new([(0.0, SegmentValue::Exact(i)), (*v, top)], c.mix(0.8).filled());
            r.set_margin(3, 3, 0, 0);
            r
        }))?;
        Ok(())
    })?;
    Ok(Chart { svg, legend: String::new() })
}

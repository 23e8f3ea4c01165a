//! Figures as SVG and PNG, rendered with plotters and an embedded font (no system font, no
//! display): error vs n per d, n*(d) with the fitted power laws, alignment vs n/d^2, transfer
//! error vs n_target.

use anyhow::{anyhow, Context, Result};
use image::codecs::png::PngEncoder;
use image::{ColorType, ImageEncoder};
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Once;

use crate::files::write_atomic;
use crate::records::{mean_se, Record};
use crate::report::Report;

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

fn ensure_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// One line of a plot: points (x, y, standard error of y).
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64, f64)>,
    /// Drawn dashed-looking (no markers): fitted curves.
    pub fitted: bool,
}

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Width and height of every figure, in pixels (the SVG's units too).
pub const SIZE: (u32, u32) = (800, 560);

/// Draws the series on log-log axes (or log x / linear y) into `stem.svg` and `stem.png`.
pub fn line_plot(stem: &Path, title: &str, x_label: &str, y_label: &str, series: &[Series], log_y: bool) -> Result<Vec<PathBuf>> {
    ensure_font();
    let pts: Vec<(f64, f64)> = series.iter().flat_map(|s| s.points.iter().map(|p| (p.0, p.1))).filter(|p| p.0 > 0.0 && p.1.is_finite()).collect();
    if pts.is_empty() {
        return Ok(Vec::new());
    }
    let (mut x0, mut x1) = pts.iter().fold((f64::INFINITY, 0f64), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let ys: Vec<f64> = pts.iter().map(|p| p.1).filter(|&y| !log_y || y > 0.0).collect();
    let (mut y0, mut y1) = ys.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &y| (a.min(y), b.max(y)));
    if x1 <= x0 {
        x0 /= 1.5;
        x1 *= 1.5;
    }
    if log_y {
        y0 /= 1.5;
        y1 *= 1.5;
    } else {
        let pad = ((y1 - y0) * 0.1).max(1e-3);
        y0 -= pad;
        y1 += pad;
    }
    let (svg, png) = (stem.with_extension("svg"), stem.with_extension("png"));
    let (width, height) = SIZE;
    // both are drawn in memory, then written whole (a full disk leaves no truncated figure)
    let mut svg_text = String::new();
    {
        let root = SVGBackend::with_string(&mut svg_text, SIZE).into_drawing_area();
        draw(&root, title, x_label, y_label, series, (x0 / 1.1, x1 * 1.1), (y0, y1), log_y).with_context(|| format!("cannot draw {}", svg.display()))?;
    }
    let mut pixels = vec![0u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, SIZE).into_drawing_area();
        draw(&root, title, x_label, y_label, series, (x0 / 1.1, x1 * 1.1), (y0, y1), log_y).with_context(|| format!("cannot draw {}", png.display()))?;
    }
    let mut png_bytes = Vec::new();
    PngEncoder::new(&mut png_bytes)
        .write_image(&pixels, width, height, ColorType::Rgb8)
        .map_err(|e| anyhow!("cannot encode {}: {e}", png.display()))?;
    write_atomic(&svg, svg_text.as_bytes())?;
    write_atomic(&png, &png_bytes)?;
    Ok(vec![svg, png])
}

#[allow(clippy::too_many_arguments)]
fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
    log_y: bool,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("{e}");
    root.fill(&WHITE).map_err(err)?;
    let mut builder = ChartBuilder::on(root);
    builder.caption(title, ("sans-serif", 22)).margin(12).x_label_area_size(44).y_label_area_size(64);
    macro_rules! body {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(x_label)
                .y_desc(y_label)
                .x_label_formatter(&|v: &f64| tick(*v))
                .y_label_formatter(&|v: &f64| tick(*v))
                .label_style(("sans-serif", 14))
                .draw()
                .map_err(err)?;
            for (i, s) in series.iter().enumerate() {
                let color = COLORS[i % COLORS.len()];
                let line: Vec<(f64, f64)> = s.points.iter().map(|p| (p.0, p.1)).filter(|p| !log_y || p.1 > 0.0).collect();
                let style = if s.fitted { color.stroke_width(1) } else { color.stroke_width(2) };
                chart
                    .draw_series(LineSeries::new(line.clone(), style))
                    .map_err(err)?
                    .label(s.name.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
                if !s.fitted {
                    chart.draw_series(line.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(err)?;
                    chart
                        .draw_series(s.points.iter().filter(|p| p.2 > 0.0 && (!log_y || p.1 - p.2 > 0.0)).map(|p| {
                            ErrorBar::new_vertical(p.0, p.1 - p.2, p.1, p.1 + p.2, color.stroke_width(1), 6)
                        }))
                        .map_err(err)?;
                }
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", 14))
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(err)?;
        }};
    }
    if log_y {
        body!(builder.build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale()).map_err(err)?);
    } else {
        body!(builder.build_cartesian_2d((x0..x1).log_scale(), y0..y1).map_err(err)?);
    }
    root.present().map_err(err)?;
    Ok(())
}

/// A tick label with three significant digits (0.6, 0.25, 1000), without float noise.
fn tick(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let digits = (2 - v.abs().log10().floor() as i32).max(0) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

/// mean ± se of a record field per (d, series label, x); the label is the method, and the
/// target too when the records hold more than one.
fn grouped(records: &[Record], keep: impl Fn(&Record) -> bool, x: impl Fn(&Record) -> f64, y: impl Fn(&Record) -> Option<f64>) -> BTreeMap<(usize, String), Vec<(f64, f64, f64)>> {
    let several_targets = records.iter().any(|r| r.trial.target != records[0].trial.target);
    let label = |r: &Record| {
        if several_targets { format!("{} on {}", r.trial.label.clone(), r.trial.target) } else { r.trial.label.clone() }
    };
    let mut acc: BTreeMap<(usize, String), BTreeMap<u64, Vec<f64>>> = BTreeMap::new();
    for r in records.iter().filter(|r| r.status == "ok" && keep(r)) {
        if let Some(v) = y(r) {
            acc.entry((r.trial.d, label(r))).or_default().entry(x(r).to_bits()).or_default().push(v);
        }
    }
    acc.into_iter()
        .map(|(k, by_x)| {
            let mut pts: Vec<(f64, f64, f64)> = by_x
                .into_iter()
                .map(|(xb, vs)| {
                    let (m, se) = mean_se(&vs);
                    (f64::from_bits(xb), m, se)
                })
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            (k, pts)
        })
        .collect()
}

/// All figures of a results folder; returns the files written.
pub fn draw_all(dir: &Path, records: &[Record], report: &Report) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let errors = grouped(records, |_| true, |r| r.trial.n as f64, |r| r.test_mse);
    let dims: Vec<usize> = errors.keys().map(|k| k.0).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    for &d in &dims {
        let series: Vec<Series> = errors
            .iter()
            .filter(|(k, _)| k.0 == d)
            .map(|(k, pts)| Series { name: k.1.clone(), points: pts.clone(), fitted: false })
            .collect();
        files.extend(line_plot(&dir.join(format!("error_vs_n_d{d}")), &format!("test error vs n, d = {d}"), "n (training samples)", "test MSE / E[f*^2]", &series, true)?);
    }
    // n*(d) with fitted power laws
    let mut nstar: Vec<Series> = Vec::new();
    let mut by_method: BTreeMap<String, Vec<(f64, f64, f64)>> = BTreeMap::new();
    let several_targets = report.n_star.iter().any(|r| r.target != report.n_star[0].target);
    let name = |method: &str, target: &str| if several_targets { format!("{method} on {target}") } else { method.to_string() };
    for r in report.n_star.iter() {
        if let Some(v) = r.n_star {
            by_method.entry(name(&r.method, &r.target)).or_default().push((r.d as f64, v, 0.0));
        }
    }
    for (m, pts) in by_method {
        if let Some(fit) = report.exponents.iter().find(|e| name(&e.method, &e.target) == m) {
            let c = pts.iter().map(|p| p.1.ln() - fit.exponent * p.0.ln()).sum::<f64>() / pts.len() as f64;
            let (a, b) = (pts.first().unwrap().0, pts.last().unwrap().0);
            let line = (0..=20).map(|i| a * (b / a).powf(i as f64 / 20.0)).map(|d| (d, (c + fit.exponent * d.ln()).exp(), 0.0)).collect();
            nstar.push(Series { name: format!("{m} fit: d^{:.2}", fit.exponent), points: line, fitted: true });
        }
        nstar.push(Series { name: m, points: pts, fitted: false });
    }
    files.extend(line_plot(&dir.join("nstar"), &format!("sample complexity n*(d) at eps = {}", report.eps), "d", "n*", &nstar, true)?);
    // alignment vs n / d^2 (onestep): curves of different d should collapse
    let align = grouped(records, |r| r.trial.method == "onestep", |r| r.trial.n as f64 / (r.trial.d * r.trial.d) as f64, |r| r.alignment);
    let series: Vec<Series> = align.iter().map(|(k, pts)| Series { name: format!("{} d = {}", k.1, k.0), points: pts.clone(), fitted: false }).collect();
    files.extend(line_plot(&dir.join("alignment_vs_n_over_d2"), "first-layer alignment vs n / d^2 (onestep)", "n / d^2", "||W P_U||^2 / ||W||^2", &series, false)?);
    // transfer error vs n_target per d
    let tr = grouped(records, |r| r.trial.method == "transfer", |r| r.trial.n as f64, |r| r.test_mse);
    let series: Vec<Series> = tr.iter().map(|(k, pts)| Series { name: format!("{} d = {}", k.1, k.0), points: pts.clone(), fitted: false }).collect();
    files.extend(line_plot(&dir.join("transfer_vs_n_target"), "transfer: target error vs n_target", "n_target", "test MSE / E[f*^2]", &series, true)?);
    Ok(files)
}

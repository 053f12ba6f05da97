//! Charts for `ocean report`, described once and drawn both as SVG (with every label) and as PNG
//! (the same marks, axes and numeric tick labels in a built-in 3×5 digit font; the names are in
//! the SVG and the HTML page). No plotting dependency: PNG bytes come from [`crate::plot::png`].

use std::fmt::Write as _;

use crate::plot::{glyph, Canvas};

/// What a layer draws.
#[derive(Debug, Clone, PartialEq)]
pub enum Mark {
    /// A polyline through `(x, y)`, with a dot at each point.
    Line(Vec<(f64, f64)>),
    /// A shaded band between `lo` and `hi` along `(x, lo, hi)`.
    Band(Vec<(f64, f64, f64)>),
    /// Points `(x, y)` with vertical error bars `[lo, hi]`: `(x, y, lo, hi)`.
    ErrorBars(Vec<(f64, f64, f64, f64)>),
    /// Bars `(x_from, x_to, height)` from 0.
    Bars(Vec<(f64, f64, f64)>),
}

/// One named, coloured layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    /// Legend name.
    pub name: String,
    /// RGB colour.
    pub colour: [u8; 3],
    /// What it draws.
    pub mark: Mark,
}

/// A chart: layers over shared axes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Chart {
    /// Title.
    pub title: String,
    /// x axis label.
    pub x_label: String,
    /// y axis label.
    pub y_label: String,
    /// The layers, drawn in order.
    pub layers: Vec<Layer>,
    /// Labels at given x positions instead of numeric ticks (dates, categories).
    pub x_ticks: Option<Vec<(f64, String)>>,
}

/// A palette of distinguishable colours.
pub const PALETTE: [[u8; 3]; 8] = [
    [31, 119, 180],
    [214, 39, 40],
    [44, 160, 44],
    [255, 127, 14],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [23, 190, 207],
];

const MARGIN: (f64, f64, f64, f64) = (70.0, 20.0, 40.0, 70.0); // left, right, top, bottom

/// "Nice" tick positions (1, 2 or 5 × 10^k apart) covering `[lo, hi]`.
pub fn ticks(lo: f64, hi: f64, about: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return vec![lo];
    }
    let raw = (hi - lo) / about.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step =
        [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| *s >= 0.75 * raw).unwrap_or(10.0 * magnitude);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

/// A tick value as short text.
pub fn tick_label(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e5).contains(&a) {
        format!("{v:.0e}")
    } else if a >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn hex([r, g, b]: [u8; 3]) -> String {
    format!("#{r:02x}{g:02x}{b:02x}")
}

impl Chart {
    /// The data's x and y ranges (y always includes every band and bar end), padded by 5 %.
    fn bounds(&self) -> (f64, f64, f64, f64) {
        let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
        let mut see = |x: f64, y: f64| {
            if x.is_finite() && y.is_finite() {
                (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
            }
        };
        for layer in &self.layers {
            match &layer.mark {
                Mark::Line(p) => p.iter().for_each(|&(x, y)| see(x, y)),
                Mark::Band(p) => p.iter().for_each(|&(x, lo, hi)| {
                    see(x, lo);
                    see(x, hi)
                }),
                Mark::ErrorBars(p) => p.iter().for_each(|&(x, y, lo, hi)| {
                    see(x, y);
                    see(x, lo);
                    see(x, hi)
                }),
                Mark::Bars(p) => p.iter().for_each(|&(a, b, h)| {
                    see(a, 0.0);
                    see(b, h)
                }),
            }
        }
        for (x, _) in self.x_ticks.iter().flatten() {
            (x0, x1) = (x0.min(*x), x1.max(*x));
        }
        if y0 > y1 {
            (y0, y1) = (0.0, 1.0);
        }
        if x0 > x1 {
            return (0.0, 1.0, 0.0, 1.0);
        }
        let pad = |lo: f64, hi: f64| {
            let span = if hi - lo > 1e-12 { hi - lo } else { lo.abs().max(1.0) };
            (lo - 0.05 * span, hi + 0.05 * span)
        };
        let ((x0, x1), (y0, y1)) = (pad(x0, x1), pad(y0, y1));
        (x0, x1, y0, y1)
    }

    /// Pixel mapping for a `width × height` drawing.
    fn frame(&self, width: u32, height: u32) -> Frame {
        let (x0, x1, y0, y1) = self.bounds();
        let (l, r, t, b) = MARGIN;
        Frame { x0, x1, y0, y1, left: l, right: f64::from(width) - r, top: t, bottom: f64::from(height) - b }
    }

    fn x_tick_list(&self, f: &Frame) -> Vec<(f64, String)> {
        match &self.x_ticks {
            Some(t) => t.clone(),
            None => ticks(f.x0, f.x1, 6).into_iter().map(|v| (v, tick_label(v))).collect(),
        }
    }

    /// The chart as an SVG document.
    pub fn svg(&self, width: u32, height: u32) -> String {
        let f = self.frame(width, height);
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
        );
        let _ = write!(s, r#"<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>"#);
        let _ = write!(
            s,
            r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
            width / 2,
            escape(&self.title)
        );
        for v in ticks(f.y0, f.y1, 5) {
            let y = f.py(v);
            let _ = write!(
                s,
                r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e0e0e0"/>"##,
                f.left, f.right
            );
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                f.left - 6.0,
                y + 4.0,
                tick_label(v)
            );
        }
        let rotate = self.x_ticks.is_some();
        for (v, label) in self.x_tick_list(&f) {
            let x = f.px(v);
            let _ = write!(
                s,
                r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#e0e0e0"/>"##,
                f.top, f.bottom
            );
            let y = f.bottom + 16.0;
            if rotate {
                let _ = write!(
                    s,
                    r#"<text x="{x:.1}" y="{y:.1}" text-anchor="end" transform="rotate(-25 {x:.1} {y:.1})">{}</text>"#,
                    escape(&label)
                );
            } else {
                let _ = write!(s, r#"<text x="{x:.1}" y="{y:.1}" text-anchor="middle">{}</text>"#, escape(&label));
            }
        }
        let _ = write!(
            s,
            r##"<path d="M{:.1} {:.1} V{:.1} H{:.1}" fill="none" stroke="#404040"/>"##,
            f.left, f.top, f.bottom, f.right
        );
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            (f.left + f.right) / 2.0,
            height - 8,
            escape(&self.x_label)
        );
        let mid = (f.top + f.bottom) / 2.0;
        let _ = write!(
            s,
            r#"<text x="16" y="{mid:.1}" text-anchor="middle" transform="rotate(-90 16 {mid:.1})">{}</text>"#,
            escape(&self.y_label)
        );
        for layer in &self.layers {
            let c = hex(layer.colour);
            match &layer.mark {
                Mark::Line(p) => {
                    let d: Vec<String> = p.iter().map(|&(x, y)| format!("{:.1},{:.1}", f.px(x), f.py(y))).collect();
                    let _ =
                        write!(s, r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="2"/>"#, d.join(" "));
                    for &(x, y) in p {
                        let _ = write!(s, r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{c}"/>"#, f.px(x), f.py(y));
                    }
                }
                Mark::Band(p) => {
                    let mut d: Vec<String> =
                        p.iter().map(|&(x, _, hi)| format!("{:.1},{:.1}", f.px(x), f.py(hi))).collect();
                    d.extend(p.iter().rev().map(|&(x, lo, _)| format!("{:.1},{:.1}", f.px(x), f.py(lo))));
                    let _ =
                        write!(s, r#"<polygon points="{}" fill="{c}" fill-opacity="0.2" stroke="none"/>"#, d.join(" "));
                }
                Mark::ErrorBars(p) => {
                    for &(x, y, lo, hi) in p {
                        let (px, ylo, yhi) = (f.px(x), f.py(lo), f.py(hi));
                        let _ = write!(
                            s,
                            r#"<path d="M{px:.1} {ylo:.1} V{yhi:.1} M{:.1} {ylo:.1} H{:.1} M{:.1} {yhi:.1} H{:.1}" stroke="{c}" stroke-width="1.5" fill="none"/>"#,
                            px - 5.0,
                            px + 5.0,
                            px - 5.0,
                            px + 5.0
                        );
                        let _ = write!(s, r#"<circle cx="{px:.1}" cy="{:.1}" r="4" fill="{c}"/>"#, f.py(y));
                    }
                }
                Mark::Bars(p) => {
                    for &(a, b, h) in p {
                        let (xa, xb, y, base) = (f.px(a), f.px(b), f.py(h), f.py(0.0));
                        let _ = write!(
                            s,
                            r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{c}" fill-opacity="0.6"/>"#,
                            xa.min(xb),
                            y.min(base),
                            (xb - xa).abs().max(1.0),
                            (base - y).abs()
                        );
                    }
                }
            }
        }
        let named: Vec<&Layer> = self.layers.iter().filter(|l| !l.name.is_empty()).collect();
        for (i, layer) in named.iter().enumerate() {
            let y = f.top + 8.0 + 16.0 * i as f64;
            let _ = write!(
                s,
                r#"<rect x="{:.1}" y="{:.1}" width="10" height="10" fill="{}"/>"#,
                f.right - 190.0,
                y - 9.0,
                hex(layer.colour)
            );
            let _ = write!(s, r#"<text x="{:.1}" y="{y:.1}">{}</text>"#, f.right - 175.0, escape(&layer.name));
        }
        s.push_str("</svg>\n");
        s
    }

    /// The chart as PNG bytes: the same marks, axes, grid, numeric tick labels and legend
    /// swatches (no words: those are in the SVG).
    pub fn png(&self, width: u32, height: u32) -> Vec<u8> {
        let f = self.frame(width, height);
        let mut c = Canvas::new(width, height);
        for v in ticks(f.y0, f.y1, 5) {
            let y = f.py(v);
            c.line(f.left, y, f.right, y, [224, 224, 224]);
            let label = tick_label(v);
            c.text(f.left - 4.0 - 4.0 * label.len() as f64 * 2.0, y - 5.0, &label, [40, 40, 40]);
        }
        let x_ticks = self.x_tick_list(&f);
        let room = x_ticks.windows(2).map(|w| (f.px(w[1].0) - f.px(w[0].0)).abs()).fold(f.right - f.left, f64::min);
        for (v, label) in &x_ticks {
            let x = f.px(*v);
            c.line(x, f.top, x, f.bottom, [224, 224, 224]);
            // Numbers and dates are drawable (a date's time alone when the whole does not fit);
            // category names are in the SVG.
            let fits = |l: &str| 8.0 * l.chars().count() as f64 + 8.0 <= room;
            let shown = if fits(label) { label.as_str() } else { label.rsplit(' ').next().unwrap_or_default() };
            if fits(shown) && shown.chars().all(|ch| glyph(ch).is_some()) {
                c.text(x - 4.0 * shown.len() as f64, f.bottom + 6.0, shown, [40, 40, 40]);
            }
        }
        c.line(f.left, f.top, f.left, f.bottom, [64, 64, 64]);
        c.line(f.left, f.bottom, f.right, f.bottom, [64, 64, 64]);
        for layer in &self.layers {
            let col = layer.colour;
            let light = col.map(|v| (255 - (255 - u16::from(v)) / 5) as u8);
            match &layer.mark {
                Mark::Line(p) => {
                    for w in p.windows(2) {
                        c.line(f.px(w[0].0), f.py(w[0].1), f.px(w[1].0), f.py(w[1].1), col);
                    }
                    for &(x, y) in p {
                        c.rect(f.px(x) - 2.0, f.py(y) - 2.0, f.px(x) + 2.0, f.py(y) + 2.0, col);
                    }
                }
                Mark::Band(p) => {
                    for w in p.windows(2) {
                        let (xa, xb) = (f.px(w[0].0), f.px(w[1].0));
                        let steps = (xb - xa).abs().ceil().max(1.0) as usize;
                        for k in 0..=steps {
                            let t = k as f64 / steps as f64;
                            let x = xa + t * (xb - xa);
                            let lo = w[0].1 + t * (w[1].1 - w[0].1);
                            let hi = w[0].2 + t * (w[1].2 - w[0].2);
                            c.line(x, f.py(hi), x, f.py(lo), light);
                        }
                    }
                    if let [(x, lo, hi)] = p.as_slice() {
                        c.rect(f.px(*x) - 3.0, f.py(*hi), f.px(*x) + 3.0, f.py(*lo), light);
                    }
                }
                Mark::ErrorBars(p) => {
                    for &(x, y, lo, hi) in p {
                        let px = f.px(x);
                        c.line(px, f.py(lo), px, f.py(hi), col);
                        c.line(px - 5.0, f.py(lo), px + 5.0, f.py(lo), col);
                        c.line(px - 5.0, f.py(hi), px + 5.0, f.py(hi), col);
                        c.rect(px - 3.0, f.py(y) - 3.0, px + 3.0, f.py(y) + 3.0, col);
                    }
                }
                Mark::Bars(p) => {
                    for &(a, b, h) in p {
                        c.rect(f.px(a), f.py(h), f.px(b), f.py(0.0), col.map(|v| (u16::from(v) * 3 / 5 + 100) as u8));
                    }
                }
            }
        }
        for (i, layer) in self.layers.iter().filter(|l| !l.name.is_empty()).enumerate() {
            let y = f.top + 16.0 * i as f64;
            c.rect(f.right - 190.0, y, f.right - 180.0, y + 10.0, layer.colour);
        }
        c.png()
    }
}

/// Data → pixel coordinates.
struct Frame {
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
}

impl Frame {
    fn px(&self, x: f64) -> f64 {
        self.left + (x - self.x0) / (self.x1 - self.x0) * (self.right - self.left)
    }

    fn py(&self, y: f64) -> f64 {
        self.bottom - (y - self.y0) / (self.y1 - self.y0) * (self.bottom - self.top)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ticks_and_labels() {
        assert_eq!(ticks(0.0, 10.0, 5), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(ticks(-13.0, -1.0, 5), vec![-12.0, -10.0, -8.0, -6.0, -4.0, -2.0]);
        assert_eq!(ticks(0.01, 0.049, 4), vec![0.01, 0.02, 0.03, 0.04]);
        assert_eq!(
            (tick_label(-2.5), tick_label(0.125), tick_label(1e-6), tick_label(300.0)),
            ("-2.5".into(), "0.125".into(), "1e-6".into(), "300".into())
        );
    }

    #[test]
    fn one_chart_as_svg_and_png() {
        let chart = Chart {
            title: "V̂ <by> window".into(),
            x_label: "time".into(),
            y_label: "V̂".into(),
            layers: vec![
                Layer {
                    name: String::new(),
                    colour: PALETTE[0],
                    mark: Mark::Band(vec![(0.0, -3.0, -1.0), (1.0, -4.0, -2.0)]),
                },
                Layer { name: "m & v".into(), colour: PALETTE[0], mark: Mark::Line(vec![(0.0, -2.0), (1.0, -3.0)]) },
                Layer { name: "bars".into(), colour: PALETTE[1], mark: Mark::Bars(vec![(0.0, 0.5, 3.0)]) },
                Layer { name: "arm".into(), colour: PALETTE[2], mark: Mark::ErrorBars(vec![(0.5, -1.0, -2.0, 0.0)]) },
            ],
            x_ticks: Some(vec![(0.0, "2026-11-26".into()), (1.0, "2026-11-27".into())]),
        };
        let svg = chart.svg(640, 360);
        assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("V̂ &lt;by&gt; window") && svg.contains("m &amp; v") && svg.contains("2026-11-27"));
        assert_eq!(svg.matches("<polygon").count(), 1);
        let png = chart.png(640, 360);
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[16..24], &[0, 0, 2, 128, 0, 0, 1, 104]);
        // The drawing is not blank: the band's light blue is in the (inflated) image data.
        let idat = png.windows(4).position(|w| w == b"IDAT").expect("an IDAT chunk");
        let len = u32::from_be_bytes(png[idat - 4..idat].try_into().unwrap()) as usize;
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::ZlibDecoder::new(&png[idat + 4..idat + 4 + len]), &mut raw)
            .unwrap();
        assert_eq!(raw.len(), 360 * (1 + 640 * 3));
        assert!(raw.windows(3).any(|w| w == [211, 228, 240]), "band colour missing");
    }
}

//! Line charts as PNG files, without a plotting dependency: an RGB canvas (lines drawn with
//! Bresenham's algorithm, rectangles, a 3×5 digit font) shared with `crate::chart`, and a PNG
//! writer (zlib through flate2, CRC-32).

/// A series: points `(x, y)` and a colour.
pub struct Series<'a> {
    /// The points, in x order.
    pub points: &'a [(f64, f64)],
    /// RGB colour.
    pub colour: [u8; 3],
}

/// Draws `series` on a `width × height` chart with axes and a light grid (4 × 4) and returns
/// the PNG bytes. Axis ranges cover every point; the y axis starts at the lowest value.
pub fn line_chart(series: &[Series<'_>], width: u32, height: u32) -> Vec<u8> {
    let (w, h) = (width.max(64) as i64, height.max(64) as i64);
    let (margin_l, margin_r, margin_t, margin_b) = (40i64, 12i64, 12i64, 30i64);
    let all = series.iter().flat_map(|s| s.points.iter()).filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    if y1 - y0 < 1e-12 {
        y1 = y0 + 1.0;
    }
    let (pw, ph) = (w - margin_l - margin_r, h - margin_t - margin_b);
    let to_px = |x: f64, y: f64| {
        let px = margin_l + ((x - x0) / (x1 - x0) * pw as f64).round() as i64;
        let py = margin_t + ph - ((y - y0) / (y1 - y0) * ph as f64).round() as i64;
        (px, py)
    };
    let mut canvas = Canvas::new(w as u32, h as u32);
    let f = |v: i64| v as f64;
    for k in 0..=4 {
        let gx = margin_l + pw * k / 4;
        let gy = margin_t + ph * k / 4;
        canvas.line(f(gx), f(margin_t), f(gx), f(margin_t + ph), [225, 225, 225]);
        canvas.line(f(margin_l), f(gy), f(margin_l + pw), f(gy), [225, 225, 225]);
    }
    canvas.line(f(margin_l), f(margin_t + ph), f(margin_l + pw), f(margin_t + ph), [60, 60, 60]);
    canvas.line(f(margin_l), f(margin_t), f(margin_l), f(margin_t + ph), [60, 60, 60]);
    for s in series {
        let pts: Vec<(i64, i64)> =
            s.points.iter().filter(|(x, y)| x.is_finite() && y.is_finite()).map(|&(x, y)| to_px(x, y)).collect();
        for p in &pts {
            canvas.rect(f(p.0), f(p.1), f(p.0 + 1), f(p.1 + 1), s.colour);
        }
        for pair in pts.windows(2) {
            canvas.line(f(pair[0].0), f(pair[0].1), f(pair[1].0), f(pair[1].1), s.colour);
        }
    }
    canvas.png()
}

/// An RGB raster: what both the line charts here and `crate::chart` draw on.
pub(crate) struct Canvas {
    width: i64,
    height: i64,
    pixels: Vec<u8>,
}

/// 3×5 glyphs for tick labels: rows top to bottom, 3 bits each (MSB left).
pub(crate) fn glyph(c: char) -> Option<[u8; 5]> {
    Some(match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 2, 2],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '-' => [0, 0, 7, 0, 0],
        '+' => [0, 2, 7, 2, 0],
        '.' => [0, 0, 0, 0, 2],
        'e' => [0, 7, 7, 4, 7],
        ':' => [0, 2, 0, 2, 0],
        ' ' => [0; 5],
        _ => return None,
    })
}

impl Canvas {
    /// The raster as PNG bytes.
    pub(crate) fn png(&self) -> Vec<u8> {
        png(self.width as u32, self.height as u32, &self.pixels)
    }

    pub(crate) fn new(width: u32, height: u32) -> Self {
        Canvas { width: i64::from(width), height: i64::from(height), pixels: vec![255; (width * height * 3) as usize] }
    }

    pub(crate) fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if (0..self.width).contains(&x) && (0..self.height).contains(&y) {
            let i = ((y * self.width + x) * 3) as usize;
            self.pixels[i..i + 3].copy_from_slice(&c);
        }
    }

    pub(crate) fn rect(&mut self, x0: f64, y0: f64, x1: f64, y1: f64, c: [u8; 3]) {
        let (xa, xb) = (x0.min(x1).round() as i64, x0.max(x1).round() as i64);
        let (ya, yb) = (y0.min(y1).round() as i64, y0.max(y1).round() as i64);
        for y in ya..=yb {
            for x in xa..=xb {
                self.set(x, y, c);
            }
        }
    }

    /// Bresenham's line.
    pub(crate) fn line(&mut self, x0: f64, y0: f64, x1: f64, y1: f64, c: [u8; 3]) {
        let (mut x, mut y) = (x0.round() as i64, y0.round() as i64);
        let (xe, ye) = (x1.round() as i64, y1.round() as i64);
        let (dx, dy) = ((xe - x).abs(), -(ye - y).abs());
        let (sx, sy) = (if x < xe { 1 } else { -1 }, if y < ye { 1 } else { -1 });
        let mut err = dx + dy;
        loop {
            self.set(x, y, c);
            if x == xe && y == ye {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// Text in the 3×5 font at scale 2 (8 px per character); unknown characters are skipped.
    pub(crate) fn text(&mut self, x: f64, y: f64, text: &str, c: [u8; 3]) {
        for (i, ch) in text.chars().enumerate() {
            let Some(rows) = glyph(ch) else { continue };
            let left = x.round() as i64 + 8 * i as i64;
            for (r, bits) in rows.iter().enumerate() {
                for b in 0..3 {
                    if bits & (4 >> b) != 0 {
                        for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                            self.set(left + 2 * b + dx, y.round() as i64 + 2 * r as i64 + dy, c);
                        }
                    }
                }
            }
        }
    }
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    !c
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// An RGB image as PNG.
pub fn png(width: u32, height: u32, rgb: &[u8]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(rgb.len() + height as usize);
    for row in rgb.chunks(width as usize * 3) {
        raw.push(0); // filter: none
        raw.extend_from_slice(row);
    }
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut encoder, &raw).expect("compressing into memory cannot fail");
    let z = encoder.finish().expect("compressing into memory cannot fail");
    let mut out = vec![0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_of_a_known_string() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn a_chart_is_a_png_of_the_right_size() {
        let pts = [(0.0, 3.0), (1.0, 2.0), (2.0, 1.5)];
        let bytes = line_chart(&[Series { points: &pts, colour: [30, 90, 200] }], 200, 120);
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&bytes[16..24], &[0, 0, 0, 200, 0, 0, 0, 120]);
        assert_eq!(&bytes[bytes.len() - 8..bytes.len() - 4], b"IEND");
    }
}

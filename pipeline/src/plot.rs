//! Line charts as PNG files, without a plotting dependency: an RGB canvas, lines drawn with
//! Bresenham's algorithm, and a PNG writer (zlib through flate2, CRC-32).

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
    let mut px = vec![255u8; (w * h * 3) as usize];
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
    let mut set = |x: i64, y: i64, c: [u8; 3]| {
        if x >= 0 && y >= 0 && x < w && y < h {
            let i = ((y * w + x) * 3) as usize;
            px[i..i + 3].copy_from_slice(&c);
        }
    };
    for k in 0..=4 {
        let gx = margin_l + pw * k / 4;
        let gy = margin_t + ph * k / 4;
        for y in margin_t..=margin_t + ph {
            set(gx, y, [225, 225, 225]);
        }
        for x in margin_l..=margin_l + pw {
            set(x, gy, [225, 225, 225]);
        }
    }
    for x in margin_l..=margin_l + pw {
        set(x, margin_t + ph, [60, 60, 60]);
    }
    for y in margin_t..=margin_t + ph {
        set(margin_l, y, [60, 60, 60]);
    }
    for s in series {
        let pts: Vec<(i64, i64)> =
            s.points.iter().filter(|(x, y)| x.is_finite() && y.is_finite()).map(|&(x, y)| to_px(x, y)).collect();
        for p in &pts {
            for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                set(p.0 + dx, p.1 + dy, s.colour);
            }
        }
        for pair in pts.windows(2) {
            let (mut x, mut y) = pair[0];
            let (xe, ye) = pair[1];
            let (dx, dy) = ((xe - x).abs(), -(ye - y).abs());
            let (sx, sy) = (if x < xe { 1 } else { -1 }, if y < ye { 1 } else { -1 });
            let mut err = dx + dy;
            loop {
                set(x, y, s.colour);
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
    }
    png(w as u32, h as u32, &px)
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

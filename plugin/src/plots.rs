//! PNG artifacts of a run: ACC/ASR over rounds (plotters, rendered into memory) and the
//! trigger image, both encoded with the `png` crate.
//!
//! Text needs a TrueType font: DejaVu Sans from Debian's `fonts-dejavu-core` (installed by
//! `scripts/setup`), or the file named by `IBAU_FONT`. Without one, the plot is drawn without
//! its labels rather than not at all.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;

use crate::error::{Error, Result};

/// Where the font comes from unless `IBAU_FONT` names another TrueType file.
pub const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

fn plot_err(e: impl std::fmt::Display) -> Error {
    Error::Parse(format!("plot: {e}"))
}

/// Registers the font once per process; whether text can be drawn.
fn font_available() -> bool {
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
        let path = std::env::var_os("IBAU_FONT")
            .map_or_else(|| PathBuf::from(DEFAULT_FONT), PathBuf::from);
        let Ok(bytes) = std::fs::read(&path) else {
            return false;
        };
        // plotters keeps fonts for the whole process (`&'static`): leak the one copy.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
    })
}

/// Encodes 8-bit pixels (`channels` = 1 gray or 3 RGB, row-major) as a PNG file.
///
/// # Errors
/// [`Error::File`] when the file cannot be written; [`Error::Parse`] for a wrong pixel count.
pub fn write_png(path: &Path, width: u32, height: u32, channels: u8, pixels: &[u8]) -> Result<()> {
    let expected = width as usize * height as usize * usize::from(channels);
    if pixels.len() != expected {
        return Err(plot_err(format!(
            "{} pixel bytes for {width}×{height}×{channels}",
            pixels.len()
        )));
    }
    let color = match channels {
        1 => png::ColorType::Grayscale,
        3 => png::ColorType::Rgb,
        c => return Err(plot_err(format!("{c} channels"))),
    };
    let file_err = |e: &dyn std::fmt::Display| Error::File {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let file = std::fs::File::create(path).map_err(|e| file_err(&e))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), width, height);
    enc.set_color(color);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().map_err(|e| file_err(&e))?;
    w.write_image_data(pixels).map_err(|e| file_err(&e))?;
    w.finish().map_err(|e| file_err(&e))
}

/// Writes a `[1, 28, 28]` (or any `[1, H, W]` / `[H, W]`) image with values in `[0, 1]` as an
/// 8-bit grayscale PNG, scaled up `scale` times (nearest neighbour) so it is visible.
///
/// # Errors
/// libtorch errors; as [`write_png`].
pub fn write_image_png(path: &Path, img: &tch::Tensor, scale: u32) -> Result<()> {
    let size = img.size();
    let (h, w) = match size.as_slice() {
        [h, w] | [1, h, w] => (*h as usize, *w as usize),
        other => return Err(plot_err(format!("image of shape {other:?}"))),
    };
    let px: Vec<f32> = Vec::<f32>::try_from(
        img.f_flatten(0, -1)?
            .f_to_kind(tch::Kind::Float)?
            .f_to_device(tch::Device::Cpu)?,
    )?;
    let s = scale.max(1) as usize;
    let mut out = Vec::with_capacity(h * w * s * s);
    for y in 0..h * s {
        for x in 0..w * s {
            let v = px[(y / s) * w + x / s];
            out.push((v.clamp(0.0, 1.0) * 255.0).round() as u8);
        }
    }
    write_png(path, (w * s) as u32, (h * s) as u32, 1, &out)
}

/// One point of a metric curve: x (round, or fractional round for per-step evaluations),
/// ACC and ASR in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CurvePoint {
    /// Round (0 = before unlearning).
    pub x: f64,
    /// Clean accuracy.
    pub acc: f64,
    /// Attack success rate.
    pub asr: f64,
}

/// Plots ACC and ASR (in %) against `x_desc` (rounds, outer steps) as a 800×500 PNG.
///
/// # Errors
/// [`Error::Parse`] when there is nothing finite to plot or drawing fails; as [`write_png`].
pub fn write_acc_asr_plot(
    path: &Path,
    title: &str,
    x_desc: &str,
    points: &[CurvePoint],
) -> Result<()> {
    let points: Vec<CurvePoint> = points
        .iter()
        .copied()
        .filter(|p| p.x.is_finite() && p.acc.is_finite() && p.asr.is_finite())
        .collect();
    if points.is_empty() {
        return Err(plot_err("no finite points"));
    }
    let (w, h) = (800u32, 500u32);
    let x_max = points.iter().map(|p| p.x).fold(1.0_f64, f64::max);
    let text = font_available();
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut builder = ChartBuilder::on(&root);
        builder.margin(20);
        if text {
            builder
                .caption(title, ("sans-serif", 22))
                .x_label_area_size(45)
                .y_label_area_size(55);
        }
        let mut chart = builder
            .build_cartesian_2d(0.0..x_max, 0.0..100.0)
            .map_err(plot_err)?;
        let mut mesh = chart.configure_mesh();
        if text {
            mesh.x_desc(x_desc).y_desc("%");
        } else {
            mesh.disable_x_axis().disable_y_axis();
        }
        mesh.draw().map_err(plot_err)?;
        let acc = chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.x, 100.0 * p.acc)),
                BLUE.stroke_width(2),
            ))
            .map_err(plot_err)?;
        if text {
            acc.label("ACC")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
        }
        let asr = chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.x, 100.0 * p.asr)),
                RED.stroke_width(2),
            ))
            .map_err(plot_err)?;
        if text {
            asr.label("ASR")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::MiddleRight)
                .draw()
                .map_err(plot_err)?;
        }
        root.present().map_err(plot_err)?;
    }
    write_png(path, w, h, 3, &buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(path: &Path) -> (png::OutputInfo, Vec<u8>) {
        let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
        let mut reader = dec.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        buf.truncate(info.buffer_size());
        (info, buf)
    }

    #[test]
    fn trigger_png_round_trips_pixels() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.png");
        let img = tch::Tensor::from_slice(&[0.0f32, 0.5, 1.0, 2.0, -1.0, 0.25]).reshape([1, 2, 3]);
        write_image_png(&p, &img, 2).unwrap();
        let (info, px) = decode(&p);
        assert_eq!((info.width, info.height), (6, 4));
        assert_eq!(info.color_type, png::ColorType::Grayscale);
        // Row 0 of the source, each pixel doubled; values clamped to [0, 1].
        assert_eq!(&px[..6], &[0, 0, 128, 128, 255, 255]);
        assert_eq!(&px[12..18], &[255, 255, 0, 0, 64, 64]);
    }

    #[test]
    fn acc_asr_plot_draws_both_curves() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("plot.png");
        let pts = [
            CurvePoint {
                x: 0.0,
                acc: 0.99,
                asr: 1.0,
            },
            CurvePoint {
                x: 1.0,
                acc: 0.98,
                asr: 0.05,
            },
            CurvePoint {
                x: 2.0,
                acc: 0.985,
                asr: 0.01,
            },
        ];
        write_acc_asr_plot(&p, "test", "round", &pts).unwrap();
        let (info, px) = decode(&p);
        assert_eq!((info.width, info.height), (800, 500));
        let count = |c: [u8; 3]| px.chunks(3).filter(|q| *q == c).count();
        // BLUE (ACC) and RED (ASR) lines are both there, and most of the canvas is white.
        assert!(
            count([0, 0, 255]) > 200,
            "blue pixels {}",
            count([0, 0, 255])
        );
        assert!(
            count([255, 0, 0]) > 200,
            "red pixels {}",
            count([255, 0, 0])
        );
        assert!(count([255, 255, 255]) > 800 * 500 / 2);
    }

    #[test]
    fn nothing_to_plot_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("plot.png");
        let nan = CurvePoint {
            x: 0.0,
            acc: f64::NAN,
            asr: 0.0,
        };
        assert!(write_acc_asr_plot(&p, "t", "round", &[nan]).is_err());
        assert!(write_png(&p, 2, 2, 1, &[0; 3]).is_err());
    }
}

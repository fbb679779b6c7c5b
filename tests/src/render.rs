//! Rendering an HTML page with headless Chromium and reading back the picture: what a director
//! would see of a report, checked as pixels (ink down the page, coloured charts).

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

use crate::tools;

/// Renders `html` to `png` at 1280x2400 (a profile of its own in `profile`).
pub fn screenshot(html: &Path, png: &Path, profile: &Path) -> Result<()> {
    let chromium = Command::new(tools::path(tools::CHROMIUM)?)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1280,2400",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", html.display()))
        .stdin(Stdio::null())
        .output()
        .context("running chromium")?;
    if !chromium.status.success() || !png.is_file() {
        bail!(
            "chromium failed:\n{}",
            String::from_utf8_lossy(&chromium.stderr)
        );
    }
    Ok(())
}

/// What a rendered page holds.
pub struct Render {
    pub width: u32,
    pub height: u32,
    /// Pixels darker than paper, per horizontal band of the page.
    pub inked_per_band: Vec<usize>,
    /// Pixels of a clear colour (not grey): chart series.
    pub colourful: usize,
    pub distinct: usize,
}

/// Reads a PNG (8-bit RGB or RGBA) and measures it in `bands` horizontal bands.
pub fn analyse(png_path: &Path, bands: usize) -> Result<Render> {
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(png_path).with_context(|| format!("opening {}", png_path.display()))?,
    ));
    let mut reader = decoder.read_info()?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf)?;
    let channels = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => bail!("unexpected PNG colour type {other:?}"),
    };
    if info.bit_depth != png::BitDepth::Eight {
        bail!("unexpected PNG bit depth {:?}", info.bit_depth);
    }
    let (width, height) = (info.width, info.height);
    let mut inked_per_band = vec![0; bands];
    let mut colourful = 0;
    let mut colours = std::collections::HashSet::new();
    for y in 0..height as usize {
        let row = &buf[y * info.line_size..][..width as usize * channels];
        for px in row.chunks(channels) {
            let (r, g, b) = (px[0], px[1], px[2]);
            colours.insert((r, g, b));
            if r.min(g).min(b) < 230 {
                inked_per_band[y * bands / height as usize] += 1;
            }
            if r.max(g).max(b) - r.min(g).min(b) > 80 {
                colourful += 1;
            }
        }
    }
    Ok(Render {
        width,
        height,
        inked_per_band,
        colourful,
        distinct: colours.len(),
    })
}

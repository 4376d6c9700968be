//! `cargo xtask sweep [--quick] [--windows N] [--threads N] [--update-docs] [--plot-only]`:
//! quality of every standard variant on SmolLM2-135M, as a table and a plot.
//!
//! The measurement is `adpq eval --sweep` (built in release here): the variants are
//! made in memory from the input model, and the input runs once per window while every
//! variant is compared with it. This task fixes the inputs (`target/data/smollm2`,
//! `lee_background.cor`, 8 windows × 512 tokens; `--quick`: 2 windows and `--sweep quick`,
//! which leaves out the uniform format v2 rows, each a scalar v2 quantization), then turns the
//! JSON report into `target/sweep/sweep.md` (printed) and `target/sweep/sweep.png`
//! (perplexity × input and mean KL against bits/weight, one marker series per
//! family). Plotting lives here, not in the `adpq` binary: plotters and its font stay
//! out of what users install. `--update-docs` copies the plot to `docs/sweep.png`;
//! `--plot-only` redraws the table and plot from the last `sweep.json`.

use std::path::Path;
use std::time::Instant;

use plotters::prelude::*;
use plotters::style::FontStyle;
use serde_json::Value;

use crate::{cargo, project_root, run_checked, DynResult};

/// DejaVu Sans reduced to ASCII plus `×`, `α`, `‖` (assets/DejaVuSans-LICENSE.txt):
/// labels render the same everywhere, with no system font lookup.
const FONT: &[u8] = include_bytes!("../assets/DejaVuSans-subset.ttf");

/// One row of the table: a model and its figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Name in the report (`input`, `rtn-sym-g128-b4`, `adpq-v1-a0.06`...).
    pub name: String,
    /// Series of the plot: `input`, `RTN sym`, `AdpQ v1`...
    pub family: String,
    /// Storage bits per weight of the quantized projections.
    pub bits: f64,
    /// Perplexity.
    pub perplexity: f64,
    /// Perplexity divided by the input's.
    pub ratio: f64,
    /// Mean KL(input ‖ model), nats.
    pub kl: f64,
    /// Top-1 agreement with the input, 0..=1.
    pub top1: f64,
}

/// What the table says about the run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    /// Windows scored.
    pub windows: u64,
    /// Tokens per window.
    pub window_len: u64,
    /// Next-token predictions per model.
    pub predictions: u64,
    /// Wall time of the evaluation, seconds.
    pub seconds: f64,
}

/// `cargo xtask sweep`: measure (unless `--plot-only`), then write the table and plot.
pub fn run(args: &[String]) -> DynResult {
    let mut windows = 8usize;
    let mut set = "full";
    let mut threads = 0usize;
    let mut update_docs = false;
    let mut plot_only = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| -> DynResult<usize> {
            let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            Ok(v.parse().map_err(|e| format!("{flag} {v}: {e}"))?)
        };
        match a.as_str() {
            "--quick" => (windows, set) = (2, "quick"),
            "--windows" => windows = value("--windows")?,
            "--threads" | "-j" => threads = value("--threads")?,
            "--update-docs" => update_docs = true,
            "--plot-only" => plot_only = true,
            other => return Err(format!("sweep: unknown argument `{other}`").into()),
        }
    }
    let root = project_root();
    let out_dir = root.join("target/sweep");
    std::fs::create_dir_all(&out_dir)?;
    let json_path = out_dir.join("sweep.json");
    if !plot_only {
        measure(&root, &json_path, set, windows, threads)?;
    }

    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json_path)?)?;
    let (info, rows) = parse_report(&report)?;
    let table = markdown(&info, &rows);
    std::fs::write(out_dir.join("sweep.md"), &table)?;
    let png = out_dir.join("sweep.png");
    plot(&rows, &png)?;
    print!("{table}");
    println!(
        "\nwrote {}, {} and {}",
        json_path.display(),
        out_dir.join("sweep.md").display(),
        png.display()
    );
    if update_docs {
        let docs = root.join("docs/sweep.png");
        std::fs::copy(&png, &docs)?;
        println!("copied the plot to {}", docs.display());
    }
    Ok(())
}

/// Builds `adpq` in release and runs `adpq eval --sweep SET` (`full` or `quick`), which
/// writes `json_path`.
fn measure(root: &Path, json_path: &Path, set: &str, windows: usize, threads: usize) -> DynResult {
    let model = root.join("target/data/smollm2");
    let text = root.join("target/data/text/lee_background.cor");
    for p in [&model, &text] {
        if !p.exists() {
            let missing = format!("{} is missing: run `cargo xtask fetch` first", p.display());
            return Err(missing.into());
        }
    }
    run_checked(cargo().args(["build", "--release", "--quiet", "-p", "adpq"]))?;
    let start = Instant::now();
    let mut eval = std::process::Command::new(root.join("target/release/adpq"));
    eval.arg("eval")
        .arg("--model")
        .arg(&model)
        .arg("--text")
        .arg(&text)
        .args(["--sweep", set, "--windows", &windows.to_string()])
        .args(["--threads", &threads.to_string()])
        .arg("--report")
        .arg(json_path);
    run_checked(&mut eval)?;
    let wall = start.elapsed().as_secs_f64();
    eprintln!("adpq eval --sweep: {wall:.0} s wall, model loading and quantizing included");
    Ok(())
}

/// The rows of `adpq eval --report`'s JSON (input first), with their families.
pub fn parse_report(v: &Value) -> DynResult<(RunInfo, Vec<Row>)> {
    let num = |v: &Value, key: &str| -> DynResult<f64> {
        v[key]
            .as_f64()
            .ok_or_else(|| format!("report: `{key}` is not a number").into())
    };
    let info = RunInfo {
        windows: num(v, "windows")? as u64,
        window_len: num(v, "window_len")? as u64,
        predictions: num(v, "predictions")? as u64,
        seconds: num(v, "seconds")?,
    };
    let families = v["families"].as_array().ok_or("report: no `families`")?;
    let family_of = |name: &str| {
        families
            .iter()
            .find(|f| f["name"] == name)
            .and_then(|f| f["family"].as_str())
            .unwrap_or("other")
            .to_string()
    };
    let candidates = v["candidates"]
        .as_array()
        .ok_or("report: no `candidates`")?;
    let mut rows = Vec::new();
    for s in std::iter::once(&v["reference"]).chain(candidates) {
        let name = s["name"].as_str().ok_or("report: a row without a name")?;
        rows.push(Row {
            name: name.to_string(),
            family: family_of(name),
            bits: num(s, "bits_per_weight")?,
            perplexity: num(s, "perplexity")?,
            ratio: num(s, "perplexity_ratio")?,
            kl: num(s, "mean_kl")?,
            top1: num(s, "top1_agreement")?,
        });
    }
    Ok((info, rows))
}

/// The markdown table of the sweep, with a line saying what was measured.
pub fn markdown(info: &RunInfo, rows: &[Row]) -> String {
    let mut s = format!(
        "SmolLM2-135M, {} windows × {} tokens of lee_background.cor ({} predictions per \
         model), `adpq eval --sweep` in {:.0} s.\n\n",
        info.windows, info.window_len, info.predictions, info.seconds
    );
    s.push_str(
        "| weights | family | bits/weight | perplexity | × input | mean KL | top-1 agreement |\n",
    );
    s.push_str("|---|---|---|---|---|---|---|\n");
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {:.2} | {:.3} | {:.3} | {:.1} % |\n",
            r.name,
            r.family,
            if r.bits >= 16.0 {
                format!("{:.0}", r.bits)
            } else {
                format!("{:.3}", r.bits)
            },
            r.perplexity,
            r.ratio,
            r.kl,
            r.top1 * 100.0
        ));
    }
    s
}

/// The short label of a point: the name without its family's prefix and the bits.
fn point_label(name: &str) -> String {
    let s = [
        "rtn-sym-",
        "rtn-asym-",
        "adpq-v1-asym-",
        "adpq-v1-",
        "adpq-v2-",
        "llama.cpp-",
    ]
    .iter()
    .find_map(|p| name.strip_prefix(p))
    .unwrap_or(name);
    s.strip_suffix("-b4").unwrap_or(s).replace("a0.", "α.")
}

const COLORS: [RGBColor; 7] = [
    RGBColor(214, 39, 40),
    RGBColor(255, 127, 14),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(23, 190, 207),
];

/// A marker of shape `i` (circle, triangle, square, cross...) at `at`.
fn marker<'a, DB: DrawingBackend + 'a, C: Clone + 'a>(
    i: usize,
    at: C,
    color: RGBColor,
) -> DynElement<'a, DB, C> {
    let (fill, line) = (color.filled(), color.stroke_width(2));
    match i % 5 {
        0 => (EmptyElement::at(at) + Circle::new((0, 0), 5, fill)).into_dyn(),
        1 => (EmptyElement::at(at) + TriangleMarker::new((0, 0), 7, fill)).into_dyn(),
        2 => (EmptyElement::at(at) + Rectangle::new([(-5, -5), (5, 5)], fill)).into_dyn(),
        3 => (EmptyElement::at(at) + Cross::new((0, 0), 5, line)).into_dyn(),
        _ => (EmptyElement::at(at) + Circle::new((0, 0), 5, line)).into_dyn(),
    }
}

/// A figure of a row, plotted against its bits/weight.
type Metric = fn(&Row) -> f64;

/// Draws perplexity × input (left) and mean KL (right) against bits/weight, one marker
/// series per family; the input (32 bits) is the dashed line at ×1 and KL 0.
pub fn plot(rows: &[Row], path: &Path) -> DynResult {
    plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| "the bundled font does not parse")?;
    let quantized: Vec<&Row> = rows.iter().filter(|r| r.bits < 16.0).collect();
    if quantized.is_empty() {
        return Err("no quantized rows to plot".into());
    }
    let mut families: Vec<&str> = Vec::new();
    for r in &quantized {
        if !families.contains(&r.family.as_str()) {
            families.push(&r.family);
        }
    }
    let fold = |f: fn(&Row) -> f64| {
        quantized
            .iter()
            .map(|r| f(r))
            .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)))
    };
    let (b_lo, b_hi) = fold(|r| r.bits);
    // Room on the right for the last point's label.
    let span = (b_hi - b_lo).max(0.5);
    let x_range = (b_lo - 0.08 * span)..(b_hi + 0.15 * span);

    // plotters' legend closures need the backend to be 'static: leak the path's few
    // bytes once per plot (xtask draws one or two).
    let path: &'static Path = Box::leak(path.to_path_buf().into_boxed_path());
    let root = BitMapBackend::new(path, (1280, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, 2));
    let metrics: [(&str, Metric, f64); 2] = [
        ("perplexity × input model", |r| r.ratio, 1.0),
        ("mean KL(input ‖ model), nats", |r| r.kl, 0.0),
    ];
    for (area, (title, metric, input_value)) in panels.iter().zip(metrics) {
        let (lo, hi) = fold(metric);
        let (lo, hi) = (lo.min(input_value), hi.max(input_value));
        let pad = (hi - lo) * 0.08;
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 22))
            .margin(14)
            .x_label_area_size(42)
            .y_label_area_size(56)
            .build_cartesian_2d(x_range.clone(), (lo - pad)..(hi + pad))?;
        chart
            .configure_mesh()
            .x_desc("bits / weight (quantized projections, everything counted)")
            .light_line_style(WHITE)
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .draw()?;
        let input_line = [(x_range.start, input_value), (x_range.end, input_value)];
        chart
            .draw_series(DashedLineSeries::new(
                input_line,
                6,
                4,
                BLACK.mix(0.6).into(),
            ))?
            .label("input (32 bits)")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLACK.mix(0.6)));
        for (i, family) in families.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let mut pts: Vec<(f64, f64, String)> = quantized
                .iter()
                .filter(|r| r.family == *family)
                .map(|r| (r.bits, metric(r), point_label(&r.name)))
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            chart.draw_series(LineSeries::new(
                pts.iter().map(|p| (p.0, p.1)),
                color.mix(0.4),
            ))?;
            chart
                .draw_series(pts.iter().map(|p| marker(i, (p.0, p.1), color)))?
                .label(*family)
                .legend(move |at| marker(i, at, color));
            let font = ("sans-serif", 13).into_font().color(&color);
            chart.draw_series(pts.iter().map(|p| {
                EmptyElement::at((p.0, p.1)) + Text::new(p.2.clone(), (8, -14), font.clone())
            }))?;
        }
        chart
            .configure_series_labels()
            .label_font(("sans-serif", 14))
            .border_style(BLACK.mix(0.5))
            .background_style(WHITE.mix(0.9))
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// Where a plot for a test goes.
#[cfg(test)]
fn temp_png(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("xtask-sweep-{}-{name}.png", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Value {
        serde_json::json!({
            "windows": 8, "window_len": 512, "predictions": 4088, "seconds": 120.5,
            "reference": {"name": "input", "bits_per_weight": 32.0, "perplexity": 33.06,
                "perplexity_ratio": 1.0, "mean_kl": 0.0, "top1_agreement": 1.0, "forward_seconds": 9.0},
            "candidates": [
                {"name": "rtn-sym-g128-b4", "bits_per_weight": 4.125, "perplexity": 53.43,
                 "perplexity_ratio": 1.616, "mean_kl": 0.65, "top1_agreement": 0.559, "forward_seconds": 9.0},
                {"name": "adpq-v1-a0.06", "bits_per_weight": 4.807, "perplexity": 41.17,
                 "perplexity_ratio": 1.245, "mean_kl": 0.28, "top1_agreement": 0.704, "forward_seconds": 9.0}
            ],
            "families": [
                {"name": "input", "family": "input"},
                {"name": "rtn-sym-g128-b4", "family": "RTN sym"},
                {"name": "adpq-v1-a0.06", "family": "AdpQ v1"}
            ]
        })
    }

    #[test]
    fn the_table_has_a_row_per_model_with_its_family_and_figures() {
        let (info, rows) = parse_report(&report()).unwrap();
        assert_eq!(info.predictions, 4088);
        assert_eq!(rows.len(), 3);
        let md = markdown(&info, &rows);
        let lines: Vec<&str> = md.lines().collect();
        assert!(lines[0].contains("8 windows × 512 tokens"), "{md}");
        assert!(lines[2].starts_with("| weights | family | bits/weight"));
        assert_eq!(
            lines[4],
            "| input | input | 32 | 33.06 | 1.000 | 0.000 | 100.0 % |"
        );
        assert_eq!(
            lines[6],
            "| adpq-v1-a0.06 | AdpQ v1 | 4.807 | 41.17 | 1.245 | 0.280 | 70.4 % |"
        );
        assert_eq!(lines.len(), 7, "{md}");
    }

    #[test]
    fn a_report_without_families_is_refused() {
        let mut r = report();
        r.as_object_mut().unwrap().remove("families");
        assert!(parse_report(&r).is_err());
    }

    #[test]
    fn point_labels_drop_the_family_prefix() {
        assert_eq!(point_label("rtn-asym-g32-b4"), "g32");
        assert_eq!(point_label("adpq-v1-a0.02"), "α.02");
        assert_eq!(point_label("adpq-v1-asym-a0.06-g64"), "α.06-g64");
        assert_eq!(point_label("adpq-v2-a0.10"), "α.10");
        assert_eq!(point_label("adpq-v2-vproj6"), "vproj6");
        assert_eq!(point_label("a/b.safetensors"), "a/b.safetensors");
    }

    #[test]
    fn the_plot_is_a_png() {
        let (_, rows) = parse_report(&report()).unwrap();
        let path = temp_png("plot");
        plot(&rows, &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        if std::env::var_os("XTASK_KEEP_PLOT").is_none() {
            std::fs::remove_file(&path).unwrap();
        } else {
            eprintln!("kept {}", path.display());
        }
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG signature");
        assert!(
            bytes.len() > 10_000,
            "{} bytes: axes, text and markers",
            bytes.len()
        );
    }
}

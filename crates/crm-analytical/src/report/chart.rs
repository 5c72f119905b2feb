//! SVG charts (bar and line) drawn with `plotters`' SVG backend, returned as a string a
//! frontend can show as it is. No fonts are read: the SVG carries `<text>` elements that the
//! viewer renders, so the output is the same on every machine. Text from the data (titles,
//! category and series names) is XML-escaped by the backend.

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Collector, Error, Problem, Result};

/// Smallest chart side, in pixels.
pub const MIN_SIDE: u32 = 100;
/// Largest chart side, in pixels.
pub const MAX_SIDE: u32 = 4000;
/// Most categories on one chart.
pub const MAX_CATEGORIES: usize = 1000;
/// Most series on one chart.
pub const MAX_SERIES: usize = 50;

/// One named series of values, one per category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// Legend name.
    pub name: String,
    /// One value per category.
    pub values: Vec<f64>,
}

/// What a chart shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChartData {
    /// Caption.
    pub title: String,
    /// The y axis description (a currency code, "customers"...).
    pub y_label: String,
    /// The x axis categories (period labels, stage names...).
    pub categories: Vec<String>,
    /// The series.
    pub series: Vec<Series>,
}

impl ChartData {
    /// Checks the data: categories and series present and within limits, one finite value
    /// per category in each series (`series[i].values`).
    pub fn validate(&self) -> Result<()> {
        let mut c = Collector::default();
        if self.categories.is_empty() {
            c.add(
                "categories",
                Problem::Required,
                "at least one category is required",
            );
        } else if self.categories.len() > MAX_CATEGORIES {
            c.add(
                "categories",
                Problem::OutOfRange,
                format!("at most {MAX_CATEGORIES} categories"),
            );
        }
        if self.series.is_empty() {
            c.add(
                "series",
                Problem::Required,
                "at least one series is required",
            );
        } else if self.series.len() > MAX_SERIES {
            c.add(
                "series",
                Problem::OutOfRange,
                format!("at most {MAX_SERIES} series"),
            );
        }
        for (i, s) in self.series.iter().enumerate() {
            if s.values.len() != self.categories.len() {
                c.add(
                    format!("series[{i}].values"),
                    Problem::WrongCount,
                    format!(
                        "needs one value per category ({}), found {}",
                        self.categories.len(),
                        s.values.len()
                    ),
                );
            }
            if s.values.iter().any(|v| !v.is_finite()) {
                c.add(
                    format!("series[{i}].values"),
                    Problem::NotFinite,
                    "values must be finite numbers",
                );
            }
        }
        c.finish()
    }

    fn y_range(&self) -> (f64, f64) {
        let values = self.series.iter().flat_map(|s| s.values.iter().copied());
        let (lo, hi) = values.fold((0.0_f64, 0.0_f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
        if hi - lo <= f64::EPSILON {
            (lo, lo + 1.0)
        } else {
            let pad = (hi - lo) * 0.05;
            (if lo < 0.0 { lo - pad } else { lo }, hi + pad)
        }
    }
}

/// Chart size in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Size {
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

impl Default for Size {
    fn default() -> Self {
        Self {
            width: 800,
            height: 450,
        }
    }
}

impl Size {
    fn validate(&self) -> Result<()> {
        let mut c = Collector::default();
        for (name, v) in [("width", self.width), ("height", self.height)] {
            if !(MIN_SIDE..=MAX_SIDE).contains(&v) {
                c.add(
                    format!("size.{name}"),
                    Problem::OutOfRange,
                    format!("must be within {MIN_SIDE}..={MAX_SIDE}"),
                );
            }
        }
        c.finish()
    }
}

fn render_err(e: impl std::fmt::Display) -> Error {
    Error::field("chart", Problem::Render, format!("drawing failed: {e}"))
}

fn color(i: usize) -> RGBColor {
    let colors = Palette99::COLORS;
    let (r, g, b) = colors.get(i % colors.len()).copied().unwrap_or((0, 0, 0));
    RGBColor(r, g, b)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bar,
    Line,
}

fn render(data: &ChartData, size: Size, kind: Kind) -> Result<String> {
    data.validate()?;
    size.validate()?;
    let n = data.categories.len();
    let (y0, y1) = data.y_range();
    let categories = &data.categories;
    // Categories sit at x = 0, 1, ..., n-1; the axis runs half a step beyond each end.
    let x_label = |x: &f64| -> String {
        let k = x.round();
        if (x - k).abs() > 1e-6 || k < 0.0 {
            return String::new();
        }
        categories.get(k as usize).cloned().unwrap_or_default()
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (size.width, size.height)).into_drawing_area();
        root.fill(&WHITE).map_err(render_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(data.title.as_str(), ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(-0.5_f64..(n as f64 - 0.5), y0..y1)
            .map_err(render_err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n.min(24))
            .x_label_formatter(&x_label)
            .y_desc(data.y_label.as_str())
            .draw()
            .map_err(render_err)?;
        let groups = data.series.len().max(1) as f64;
        let width = 0.8 / groups;
        for (s, series) in data.series.iter().enumerate() {
            let c = color(s);
            let drawn = match kind {
                Kind::Bar => chart
                    .draw_series(series.values.iter().enumerate().map(|(i, v)| {
                        let left = i as f64 - 0.4 + s as f64 * width;
                        let base = 0.0_f64.clamp(y0, y1);
                        Rectangle::new([(left, base), (left + width, *v)], c.filled())
                    }))
                    .map_err(render_err)?,
                Kind::Line => chart
                    .draw_series(LineSeries::new(
                        series
                            .values
                            .iter()
                            .enumerate()
                            .map(|(i, v)| (i as f64, *v)),
                        c.stroke_width(2),
                    ))
                    .map_err(render_err)?,
            };
            drawn
                .label(series.name.as_str())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
        }
        if data.series.len() > 1 {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(render_err)?;
        }
        root.present().map_err(render_err)?;
    }
    Ok(svg)
}

/// A grouped bar chart: one group per category, one bar per series.
pub fn bar_chart_svg(data: &ChartData, size: Size) -> Result<String> {
    render(data, size, Kind::Bar)
}

/// A line chart: one line per series over the categories.
pub fn line_chart_svg(data: &ChartData, size: Size) -> Result<String> {
    render(data, size, Kind::Line)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn data() -> ChartData {
        ChartData {
            title: "Sales <by> region & month".into(),
            y_label: "EUR".into(),
            categories: vec!["2024-01".into(), "2024-02".into(), "2024-03".into()],
            series: vec![
                Series {
                    name: "north".into(),
                    values: vec![115.5, 7.0, 42.0],
                },
                Series {
                    name: "south".into(),
                    values: vec![0.05, -3.0, 10.0],
                },
            ],
        }
    }

    #[test]
    fn bar_chart_is_svg_with_labels_and_escaped_text() {
        let svg = bar_chart_svg(&data(), Size::default()).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("2024-02"));
        assert!(svg.contains("north") && svg.contains("south"));
        assert!(svg.contains("&lt;by&gt;") && svg.contains("&amp;"));
        assert!(!svg.contains("<by>"));
        // 6 bars (plus background and legend rectangles).
        assert!(svg.matches("<rect").count() >= 6);
    }

    #[test]
    fn line_chart_is_svg() {
        let svg = line_chart_svg(
            &data(),
            Size {
                width: 400,
                height: 300,
            },
        )
        .unwrap();
        assert!(svg.contains("<polyline"));
        assert!(svg.contains("width=\"400\""));
    }

    #[test]
    fn bad_data_is_named() {
        let mut d = data();
        d.series[1].values.pop();
        d.series[0].values[0] = f64::NAN;
        let e = bar_chart_svg(&d, Size::default()).unwrap_err();
        assert!(e.has("series[1].values", Problem::WrongCount));
        assert!(e.has("series[0].values", Problem::NotFinite));
        let e = bar_chart_svg(
            &data(),
            Size {
                width: 10,
                height: 300,
            },
        )
        .unwrap_err();
        assert!(e.has("size.width", Problem::OutOfRange));
        let empty = ChartData {
            categories: vec![],
            series: vec![],
            ..data()
        };
        let e = line_chart_svg(&empty, Size::default()).unwrap_err();
        assert!(e.has("categories", Problem::Required) && e.has("series", Problem::Required));
    }

    #[test]
    fn all_zero_and_single_category_render() {
        let d = ChartData {
            title: String::new(),
            y_label: String::new(),
            categories: vec!["only".into()],
            series: vec![Series {
                name: "s".into(),
                values: vec![0.0],
            }],
        };
        assert!(bar_chart_svg(&d, Size::default()).unwrap().contains("only"));
        assert!(line_chart_svg(&d, Size::default()).is_ok());
    }
}

//! Line charts in SVG through plotters' SVG backend: nice tick values, the whole run on an
//! integer x axis, a log y axis where asked, non-finite values marked where they occur,
//! and a legend beside each panel listing exactly what the panel draws.

use plotters::coord::Shift;
use plotters::prelude::*;

/// One line. Non-finite points (and non-positive ones on a log axis) leave a gap and get
/// a mark at the top of the panel.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// `(x, y)` points, in drawing order; x is a step or a layer index (whole numbers).
    pub points: Vec<(f64, f64)>,
}

/// One panel.
#[derive(Clone, Debug, Default)]
pub struct Chart {
    /// Title above the panel.
    pub title: String,
    /// x-axis label.
    pub x_label: String,
    /// y-axis label.
    pub y_label: String,
    /// Logarithmic y axis.
    pub log_y: bool,
    /// The lines drawn.
    pub series: Vec<Series>,
    /// Vertical marks at x (events); the texts are listed under the legend.
    pub marks: Vec<(f64, String)>,
}

/// Categorical colours (matplotlib's tab10 and two more).
const PALETTE: [RGBColor; 12] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0xbc, 0xbd, 0x22),
    RGBColor(0x17, 0xbe, 0xcf),
    RGBColor(0x39, 0x3b, 0x79),
    RGBColor(0x63, 0x79, 0x39),
];

const MARK: RGBColor = RGBColor(0xb0, 0x00, 0x00);

/// Pixel size of a panel, and the legend column beside it.
pub const WIDTH: u32 = 960;
const HEIGHT: u32 = 340;
const LEGEND: u32 = 270;

/// A legend entry: what it shows and its text.
enum Key {
    Line(RGBColor, u32),
    Cross(RGBColor),
    Event,
}

impl Chart {
    fn usable(&self, y: f64) -> bool {
        y.is_finite() && (!self.log_y || y > 0.0)
    }

    /// The x extent of every point, drawn or not (a run's non-finite tail stays on the axis),
    /// and of the marks; at least one unit wide.
    fn x_range(&self) -> (i64, i64) {
        let xs = self.series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).chain(self.marks.iter().map(|m| m.0));
        let (lo, hi) = xs.filter(|x| x.is_finite()).fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
        if lo > hi {
            return (0, 1);
        }
        (lo.floor() as i64, (hi.ceil() as i64).max(lo.floor() as i64 + 1))
    }

    /// The y extent of the drawn points: whole decades on a log axis, 5% of padding otherwise.
    fn y_range(&self) -> (f64, f64) {
        let ys = self.series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).filter(|&y| self.usable(y));
        let (lo, hi) = ys.fold((f64::MAX, f64::MIN), |(lo, hi), y| (lo.min(y), hi.max(y)));
        match (lo <= hi, self.log_y) {
            (false, true) => (1.0, 10.0),
            (false, false) => (0.0, 1.0),
            (true, true) => {
                let (lo, hi) = (lo.log10().floor(), hi.log10().ceil());
                (10f64.powf(lo), 10f64.powf(hi.max(lo + 1.0)))
            }
            (true, false) => {
                let pad = ((hi - lo) * 0.05).max(1e-9 * hi.abs().max(1.0));
                (lo - pad, hi + pad)
            }
        }
    }

    /// Draws the panel into `area`: the plot on the left, its legend on the right.
    fn draw(&self, area: &DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), String> {
        let (plot_area, legend_area) = area.split_horizontally(WIDTH - LEGEND);
        let (x0, x1) = self.x_range();
        let (y0, y1) = self.y_range();
        let mut keys: Vec<(Key, String)> = Vec::new();
        if self.log_y {
            let mut chart = builder(&plot_area, &self.title).build_cartesian_2d(x0..x1, (y0..y1).log_scale()).map_err(text)?;
            mesh(&mut chart, self, &|v: &f64| format!("{v:.0e}"))?;
            self.draw_into(&mut chart, y1, &mut keys)?;
        } else {
            let mut chart = builder(&plot_area, &self.title).build_cartesian_2d(x0..x1, y0..y1).map_err(text)?;
            mesh(&mut chart, self, &|v: &f64| format!("{v:.3}"))?;
            self.draw_into(&mut chart, y1, &mut keys)?;
        }
        legend(&legend_area, &keys, &self.marks)
    }

    /// The series, their non-finite marks and the event lines, noting each legend entry.
    fn draw_into<Y>(&self, chart: &mut ChartContext<'_, SVGBackend<'_>, Cartesian2d<plotters::coord::types::RangedCoordi64, Y>>, top: f64, keys: &mut Vec<(Key, String)>) -> Result<(), String>
    where
        Y: Ranged<ValueType = f64>,
    {
        let (bottom, top) = (chart.y_range().start, top);
        for (x, _) in &self.marks {
            let x = x.round() as i64;
            chart.draw_series(LineSeries::new([(x, bottom), (x, top)], MARK.mix(0.55).stroke_width(1))).map_err(text)?;
        }
        if !self.marks.is_empty() {
            keys.push((Key::Event, format!("events ({})", self.marks.len())));
        }
        let mut nonfinite = false;
        for (i, s) in self.series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            // Later series thinner, so that one drawn over another leaves it visible.
            let width = if self.series.len() > 1 { 3u32.saturating_sub(i as u32 / 4).max(1) } else { 2 };
            let mut drawn = 0;
            for run in s.points.split(|p| !self.usable(p.1)).filter(|r| !r.is_empty()) {
                let points: Vec<(i64, f64)> = run.iter().map(|p| (p.0.round() as i64, p.1)).collect();
                drawn += points.len();
                if points.len() == 1 {
                    chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(text)?;
                } else {
                    chart.draw_series(LineSeries::new(points, color.stroke_width(width))).map_err(text)?;
                }
            }
            let bad: Vec<i64> = s.points.iter().filter(|p| !self.usable(p.1)).map(|p| p.0.round() as i64).collect();
            if let Some(&first) = bad.first() {
                nonfinite = true;
                chart.draw_series(std::iter::once(Cross::new((first, top), 5, color.stroke_width(2)))).map_err(text)?;
            }
            let name = match (drawn, bad.first()) {
                (0, Some(_)) => format!("{} (all non-finite)", s.name),
                (_, Some(first)) => format!("{} (non-finite at {first})", s.name),
                _ => s.name.clone(),
            };
            keys.push((Key::Line(color, width), name));
        }
        if nonfinite {
            keys.push((Key::Cross(MARK), "first non-finite value".into()));
        }
        Ok(())
    }
}

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn builder<'a, 'b>(area: &'a DrawingArea<SVGBackend<'b>, Shift>, title: &str) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut b = ChartBuilder::on(area);
    b.caption(title, ("sans-serif", 16)).margin(12).x_label_area_size(40).y_label_area_size(70);
    b
}

fn mesh<Y>(
    chart: &mut ChartContext<'_, SVGBackend<'_>, Cartesian2d<plotters::coord::types::RangedCoordi64, Y>>,
    c: &Chart,
    y_format: &dyn Fn(&f64) -> String,
) -> Result<(), String>
where
    Y: Ranged<ValueType = f64> + plotters::coord::ranged1d::ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc(c.x_label.as_str())
        .y_desc(c.y_label.as_str())
        .x_labels(8)
        .y_labels(8)
        .y_label_formatter(y_format)
        .light_line_style(RGBColor(0xee, 0xee, 0xee))
        .draw()
        .map_err(text)
}

/// The legend column: one row per entry, then the events' texts (the first few).
fn legend(area: &DrawingArea<SVGBackend<'_>, Shift>, keys: &[(Key, String)], marks: &[(f64, String)]) -> Result<(), String> {
    let font = ("sans-serif", 12).into_font();
    let mut y = 40;
    for (key, name) in keys {
        match key {
            Key::Line(color, width) => area.draw(&PathElement::new([(4, y), (28, y)], color.stroke_width(*width + 1))),
            Key::Cross(color) => area.draw(&Cross::new((16, y), 5, color.stroke_width(2))),
            Key::Event => area.draw(&PathElement::new([(16, y - 7), (16, y + 7)], MARK.mix(0.55).stroke_width(2))),
        }
        .map_err(text)?;
        area.draw(&Text::new(shorten(name, 38), (34, y - 6), font.clone())).map_err(text)?;
        y += 18;
    }
    let listed = marks.len().min(((HEIGHT as i32 - y - 10) / 15).max(0) as usize);
    for (_, what) in &marks[..listed] {
        area.draw(&Text::new(shorten(what, 44), (4, y), ("sans-serif", 10).into_font())).map_err(text)?;
        y += 15;
    }
    Ok(())
}

/// `s` cut to `n` characters with an ellipsis: every label fits its column.
fn shorten(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Panels stacked vertically in one SVG document.
pub fn svg(charts: &[Chart]) -> crate::Result<String> {
    let mut out = String::new();
    let height = HEIGHT * charts.len().max(1) as u32;
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE)
            .map_err(text)
            .and_then(|()| {
                let panels = root.split_evenly((charts.len().max(1), 1));
                charts.iter().zip(&panels).try_for_each(|(c, area)| c.draw(area))?;
                root.present().map_err(text)
            })
            .map_err(|e| crate::Error::Encode { what: "a chart", message: e.to_string() })?;
    }
    Ok(out)
}

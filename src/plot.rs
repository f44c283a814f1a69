//! Line charts as hand-written SVG: no plotting crate, no font files (text is left to the
//! viewer's default sans-serif), readable in any browser.

use std::fmt::Write;

/// One line. Non-finite points (and non-positive ones on a log axis) leave a gap.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// `(x, y)` points, in drawing order.
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
    /// Vertical marks at x, labelled (events).
    pub marks: Vec<(f64, String)>,
}

const PALETTE: [&str; 12] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#393b79", "#637939",
];

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 320.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 45.0;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A compact tick label.
fn label(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1e4 || v.abs() < 1e-2 {
        format!("{v:.0e}")
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

impl Chart {
    fn usable(&self, y: f64) -> bool {
        y.is_finite() && (!self.log_y || y > 0.0)
    }

    /// Draws the panel with its top-left corner at `y0`.
    fn draw(&self, out: &mut String, y0: f64) {
        let (w, h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
        let pts = self.series.iter().flat_map(|s| &s.points).filter(|p| p.0.is_finite() && self.usable(p.1));
        let (mut x_min, mut x_max, mut y_min, mut y_max) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in pts {
            let y = if self.log_y { y.log10() } else { y };
            (x_min, x_max, y_min, y_max) = (x_min.min(x), x_max.max(x), y_min.min(y), y_max.max(y));
        }
        if x_min > x_max {
            (x_min, x_max, y_min, y_max) = (0.0, 1.0, 0.0, 1.0);
        }
        if self.log_y {
            (y_min, y_max) = (y_min.floor(), y_max.ceil());
        }
        if x_max - x_min < 1e-12 {
            x_max = x_min + 1.0;
        }
        if y_max - y_min < 1e-12 {
            y_max = y_min + 1.0;
        }
        let sx = |x: f64| LEFT + (x - x_min) / (x_max - x_min) * w;
        let sy = |y: f64| y0 + TOP + h - (y - y_min) / (y_max - y_min) * h;
        let _ = writeln!(out, r##"<text x="{}" y="{}" font-size="15" font-weight="bold">{}</text>"##, LEFT, y0 + 20.0, escape(&self.title));
        let _ = writeln!(out, r##"<rect x="{LEFT}" y="{}" width="{w}" height="{h}" fill="none" stroke="#444"/>"##, y0 + TOP);
        // Ticks: every decade on a log axis, five steps otherwise.
        let y_ticks: Vec<f64> = if self.log_y {
            let step = ((y_max - y_min) / 8.0).ceil().max(1.0);
            (0..).map(|i| y_min + i as f64 * step).take_while(|&v| v <= y_max).collect()
        } else {
            (0..=4).map(|i| y_min + (y_max - y_min) * i as f64 / 4.0).collect()
        };
        for t in y_ticks {
            let text = if self.log_y { label(10f64.powf(t)) } else { label(t) };
            let y = sy(t);
            let _ = writeln!(out, r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{text}</text>"##, LEFT + w, LEFT - 4.0, y + 4.0);
        }
        for i in 0..=5 {
            let x = x_min + (x_max - x_min) * i as f64 / 5.0;
            let _ = writeln!(out, r##"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"##, sx(x), y0 + TOP + h + 15.0, label(x.round()));
        }
        let _ = writeln!(out, r##"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">{}</text>"##, LEFT + w / 2.0, y0 + TOP + h + 35.0, escape(&self.x_label));
        let _ = writeln!(out, r##"<text x="14" y="{:.1}" font-size="12" text-anchor="middle" transform="rotate(-90 14 {:.1})">{}</text>"##, y0 + TOP + h / 2.0, y0 + TOP + h / 2.0, escape(&self.y_label));
        for (x, text) in &self.marks {
            if x.is_finite() && *x >= x_min && *x <= x_max {
                let _ = writeln!(out, r##"<line x1="{0:.1}" y1="{1:.1}" x2="{0:.1}" y2="{2:.1}" stroke="#d62728" stroke-dasharray="4 3"><title>{3}</title></line>"##, sx(*x), y0 + TOP, y0 + TOP + h, escape(text));
            }
        }
        for (i, s) in self.series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let mut d = String::new();
            let mut pen_down = false;
            for &(x, y) in &s.points {
                if x.is_finite() && self.usable(y) {
                    let y = if self.log_y { y.log10() } else { y };
                    let _ = write!(d, "{}{:.1} {:.1} ", if pen_down { "L" } else { "M" }, sx(x), sy(y));
                    pen_down = true;
                } else {
                    pen_down = false;
                }
            }
            let _ = writeln!(out, r##"<path d="{d}" fill="none" stroke="{color}" stroke-width="1.5"/>"##);
            let ly = y0 + TOP + 12.0 + 16.0 * i as f64;
            let _ = writeln!(out, r##"<line x1="{0:.1}" y1="{ly:.1}" x2="{1:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="3"/><text x="{2:.1}" y="{3:.1}" font-size="11">{4}</text>"##, LEFT + w + 10.0, LEFT + w + 28.0, LEFT + w + 32.0, ly + 4.0, escape(&s.name));
        }
    }
}

/// Panels stacked vertically in one SVG document.
pub fn svg(charts: &[Chart]) -> String {
    let height = HEIGHT * charts.len().max(1) as f64;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" font-family=\"sans-serif\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    for (i, c) in charts.iter().enumerate() {
        c.draw(&mut out, i as f64 * HEIGHT);
    }
    out.push_str("</svg>\n");
    out
}

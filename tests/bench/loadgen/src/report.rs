//! Markdown tables: one column per implementation and the Switchboard / Node ratio.

use hdrhistogram::Histogram;

use crate::coord::Outcome;
use crate::servers::Kind;

/// A table cell.
#[derive(Clone, Debug)]
pub enum Cell {
    Num(f64, usize),
    Text(String),
    Missing,
}

impl Cell {
    fn num(&self) -> Option<f64> {
        match self {
            Cell::Num(v, _) => Some(*v),
            _ => None,
        }
    }

    fn show(&self) -> String {
        match self {
            Cell::Num(v, d) => group(*v, *d),
            Cell::Text(t) => t.clone(),
            Cell::Missing => "–".into(),
        }
    }
}

/// `1234567.8` → `1,234,567.8` (with `d` decimals).
pub fn group(v: f64, d: usize) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let s = format!("{:.*}", d, v.abs());
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i.to_owned(), format!(".{f}")),
        None => (s.clone(), String::new()),
    };
    let mut out = String::new();
    for (i, ch) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    format!("{}{out}{frac}", if v < 0.0 { "-" } else { "" })
}

pub struct Row {
    pub metric: String,
    pub cells: Vec<Cell>,
    /// Show the ratio of the first column to the second.
    pub ratio: bool,
}

/// One table: `cols` are the implementations in column order.
pub struct Table {
    pub title: String,
    pub cols: Vec<Kind>,
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

impl Table {
    pub fn new(title: String, cols: Vec<Kind>) -> Self {
        Table {
            title,
            cols,
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// A numeric row from each column's outcome (`None` where an outcome is missing).
    pub fn num<'a>(
        &mut self,
        metric: &str,
        decimals: usize,
        outcomes: &[Option<&'a Outcome>],
        f: impl Fn(&'a Outcome) -> Option<f64>,
    ) {
        let cells = outcomes
            .iter()
            .map(|o| match o.and_then(&f) {
                Some(v) => Cell::Num(v, decimals),
                None => Cell::Missing,
            })
            .collect();
        self.rows.push(Row {
            metric: metric.into(),
            cells,
            ratio: true,
        });
    }

    pub fn text<'a>(
        &mut self,
        metric: &str,
        outcomes: &[Option<&'a Outcome>],
        f: impl Fn(&'a Outcome) -> String,
    ) {
        let cells = outcomes
            .iter()
            .map(|o| o.map(&f).map(Cell::Text).unwrap_or(Cell::Missing))
            .collect();
        self.rows.push(Row {
            metric: metric.into(),
            cells,
            ratio: false,
        });
    }

    pub fn render(&self) -> String {
        let mut s = format!("### {}\n\n| metric |", self.title);
        for k in &self.cols {
            s.push_str(&format!(" {} |", k.label()));
        }
        let with_ratio = self.cols.len() == 2;
        if with_ratio {
            s.push_str(" Switchboard / Node |");
        }
        s.push_str("\n|---|");
        for _ in &self.cols {
            s.push_str("---:|");
        }
        if with_ratio {
            s.push_str("---:|");
        }
        s.push('\n');
        for r in &self.rows {
            s.push_str(&format!("| {} |", r.metric));
            for c in &r.cells {
                s.push_str(&format!(" {} |", c.show()));
            }
            if with_ratio {
                let ratio = match (r.ratio, r.cells.first(), r.cells.get(1)) {
                    (true, Some(a), Some(b)) => match (a.num(), b.num()) {
                        (Some(a), Some(b)) if a > 0.0 && b > 0.0 => format!("{:.2}×", a / b),
                        _ => "–".into(),
                    },
                    _ => String::new(),
                };
                s.push_str(&format!(" {ratio} |"));
            }
            s.push('\n');
        }
        for n in &self.notes {
            s.push_str(&format!("\n- {n}"));
        }
        if !self.notes.is_empty() {
            s.push('\n');
        }
        s
    }
}

/// Milliseconds at quantile `q` (None for an empty histogram).
pub fn ms(h: &Histogram<u64>, q: f64) -> Option<f64> {
    (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        assert_eq!(group(1234567.891, 1), "1,234,567.9");
        assert_eq!(group(999.0, 0), "999");
        assert_eq!(group(-1000.0, 0), "-1,000");
    }
}

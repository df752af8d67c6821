//! Charts of the web UI drawn as SVG on the server by plotters: a training run's objective
//! per pass over the data.

use ember_driver::snapshot::TrainingSnapshot;
use plotters::prelude::*;

/// Size of a chart, in pixels.
const SIZE: (u32, u32) = (640, 300);

/// `run`'s objective per pass (passes without an objective are left out).
///
/// # Errors
///
/// Drawing failed (a message).
pub(crate) fn objective_svg(run: &TrainingSnapshot) -> Result<String, String> {
    let points: Vec<(f64, f64)> = run
        .pass_objectives
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .map(|(i, v)| ((i + 1) as f64, *v))
        .collect();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let (lo, hi) = points
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (_, y)| {
                (lo.min(*y), hi.max(*y))
            });
        let (lo, hi) = if points.is_empty() {
            (0.0, 1.0)
        } else if hi - lo < 1e-12 {
            (lo - 0.5, hi + 0.5)
        } else {
            let pad = (hi - lo) * 0.05;
            (lo - pad, hi + pad)
        };
        // The x axis spans the passes reported (k-means reports its Lloyd passes, not the
        // initialisation's before them).
        let first = points.first().map_or(1.0, |p| p.0);
        let last = points.last().map_or(2.0, |p| p.0).max(first + 1.0);
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("{} run {}: objective per pass", run.algorithm, run.run),
                ("sans-serif", 16),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d(first..last, lo..hi)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("pass")
            .y_desc("objective")
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(LineSeries::new(points, &BLUE))
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_falling_objective_is_drawn_as_one_line() {
        let run = TrainingSnapshot {
            run: 3,
            algorithm: "LogisticRegression".into(),
            rows: 100,
            pass_objectives: vec![0.69, 0.4, f64::NAN, 0.3],
            tree_levels: vec![4, 1],
            started_ms: 0,
            updated_ms: 0,
            iterations: None,
            converged: None,
            objective_history: Vec::new(),
        };
        let svg = objective_svg(&run).unwrap();
        assert!(svg.contains("<svg"), "{svg}");
        assert!(svg.contains("LogisticRegression run 3"), "{svg}");
        assert!(svg.contains("<polyline"), "the line is drawn: {svg}");
        // Passes 1, 2 and 4 are drawn: the axis spans them, labelled from 1 to 4.
        assert!(svg.contains("\n1.0\n") && svg.contains("\n4.0\n"), "{svg}");
    }
}

//! A job's stage DAG as SVG: one box per stage attempt (its id, operators and task counts),
//! an edge from the stage that computed a dataset to each stage that read it. The layout
//! and drawing are layout-rs's (Graphviz's `dot` language, laid out in layers).

use ember_driver::snapshot::JobSnapshot;
use ember_driver::StageStatus;

/// Longest operator chain drawn in a box, in characters.
const LABEL_CHARS: usize = 48;

/// Fill colours by stage state.
fn colour(status: StageStatus) -> &'static str {
    match status {
        StageStatus::Active => "lightskyblue",
        StageStatus::Complete => "palegreen",
        StageStatus::Failed => "lightcoral",
        StageStatus::Cancelled => "lightgray",
    }
}

/// `text` inside a double-quoted `dot` string.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The `dot` text of `job`'s stage graph.
pub(crate) fn job_dot(job: &JobSnapshot) -> String {
    use std::fmt::Write;
    let mut dot = String::from("digraph {\n");
    for s in &job.stages {
        let mut ops: String = s.name.chars().take(LABEL_CHARS).collect();
        if ops.len() < s.name.len() {
            ops.push('…');
        }
        let label = format!(
            "Stage {} ({})\n{}\n{}/{} tasks",
            s.stage.0,
            if s.shuffle { "shuffle map" } else { "result" },
            ops,
            s.counts.succeeded,
            s.num_tasks
        );
        let _ = writeln!(
            dot,
            "  s{} [shape=box, label={}, fillcolor={}];",
            s.stage.0,
            quoted(&label),
            colour(s.status)
        );
    }
    for (from, to) in job.stage_edges() {
        let _ = writeln!(dot, "  s{} -> s{};", from.0, to.0);
    }
    dot.push_str("}\n");
    dot
}

/// `job`'s stage graph drawn as SVG.
///
/// # Errors
///
/// The layout failed (a message, never a panic).
pub(crate) fn job_svg(job: &JobSnapshot) -> Result<String, String> {
    if job.stages.is_empty() {
        // Nothing to lay out: an empty drawing that says so.
        return Ok(concat!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="320" height="40">"#,
            r#"<text x="10" y="25" font-family="sans-serif" font-size="14">"#,
            "no stages ran on executors (the driver computed the result)</text></svg>"
        )
        .to_string());
    }
    let dot = job_dot(job);
    std::panic::catch_unwind(move || {
        let mut parser = layout::gv::DotParser::new(&dot);
        let graph = parser.process()?;
        let mut builder = layout::gv::GraphBuilder::new();
        builder.visit_graph(&graph);
        let mut visual = builder.get();
        let mut svg = layout::backends::svg::SVGWriter::new();
        visual.do_it(false, false, false, &mut svg);
        Ok::<_, String>(svg.finalize())
    })
    .map_err(|_| "laying out the stage graph failed".to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_driver::snapshot::{StageSnapshot, TaskCounts};
    use ember_driver::{JobStatus, TaskFigures};
    use ember_engine::{DatasetId, JobId, StageId};

    fn stage(id: u32, dataset: u64, parents: &[u64]) -> StageSnapshot {
        StageSnapshot {
            stage: StageId(id),
            job: JobId(1),
            dataset: DatasetId(dataset),
            shuffle: parents.is_empty(),
            parents: parents.iter().map(|d| DatasetId(*d)).collect(),
            name: "AggregateExec ← \"quoted\" ← DataSourceExec".into(),
            status: StageStatus::Complete,
            num_tasks: 2,
            counts: TaskCounts::default(),
            submitted_ms: 0,
            completed_ms: None,
            totals: TaskFigures::default(),
            tasks: Vec::new(),
        }
    }

    #[test]
    fn a_join_of_two_shuffles_draws_three_boxes_and_two_edges() {
        let job = JobSnapshot {
            job: JobId(1),
            description: "q".into(),
            pool: "default".into(),
            plan: String::new(),
            tags: Vec::new(),
            status: JobStatus::Succeeded,
            error: None,
            submitted_ms: 0,
            completed_ms: None,
            stages: vec![
                stage(1, 10, &[]),
                stage(2, 11, &[]),
                stage(3, 12, &[10, 11]),
            ],
        };
        let dot = job_dot(&job);
        assert_eq!(dot.matches("->").count(), 2, "{dot}");
        assert!(dot.contains(r#"\"quoted\""#), "quotes are escaped: {dot}");
        let svg = job_svg(&job).unwrap();
        assert!(svg.starts_with("<svg") || svg.contains("<svg"), "{svg}");
        for id in 1..=3 {
            assert!(
                svg.contains(&format!("Stage {id}")),
                "stage {id} drawn: {svg}"
            );
        }
    }
}

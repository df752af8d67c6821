//! The console progress bar: while a session's stages run, one bar per running stage on
//! stderr (its finished and running tasks out of all), cleared when the stage ends. Drawn
//! only when stderr is a terminal, as spark-shell does.

use std::collections::HashMap;
use std::io::IsTerminal;

use ember_driver::{SchedulerEvent, TaskEndStatus};
use ember_engine::StageId;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Whether progress bars would be seen.
pub(crate) fn wanted() -> bool {
    std::io::stderr().is_terminal()
}

/// One running stage's bar and its running task count.
struct StageBar {
    bar: ProgressBar,
    running: u64,
}

fn style() -> ProgressStyle {
    ProgressStyle::with_template("[Stage {prefix}] {bar:30.cyan/blue} {pos}/{len} tasks {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// Follows `events` until the driver stops, drawing a bar per running stage.
pub(crate) fn follow(mut events: tokio::sync::broadcast::Receiver<SchedulerEvent>) {
    let bars = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(5));
    tokio::spawn(async move {
        let mut stages: HashMap<StageId, StageBar> = HashMap::new();
        loop {
            let event = match events.recv().await {
                Ok(event) => event,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            };
            match event {
                SchedulerEvent::StageSubmitted { stage, tasks, .. } => {
                    let bar = bars.add(
                        ProgressBar::new(tasks as u64)
                            .with_style(style())
                            .with_prefix(stage.0.to_string()),
                    );
                    stages.insert(stage, StageBar { bar, running: 0 });
                }
                SchedulerEvent::TaskStarted { stage, .. } => {
                    if let Some(s) = stages.get_mut(&stage) {
                        s.running += 1;
                        s.bar.set_message(format!("({} running)", s.running));
                    }
                }
                SchedulerEvent::TaskEnded { stage, status, .. } => {
                    if let Some(s) = stages.get_mut(&stage) {
                        s.running = s.running.saturating_sub(1);
                        if status == TaskEndStatus::Success {
                            s.bar.inc(1);
                        }
                        s.bar.set_message(format!("({} running)", s.running));
                    }
                }
                SchedulerEvent::StageCompleted { stage, .. } => {
                    if let Some(s) = stages.remove(&stage) {
                        s.bar.finish_and_clear();
                        bars.remove(&s.bar);
                    }
                }
                _ => {}
            }
        }
        for s in stages.into_values() {
            s.bar.finish_and_clear();
        }
    });
}

//! `tsst monitor`: a live terminal dashboard of a cluster. It looks at the queues,
//! workers and runs every `--interval-secs` (the snapshot `tsst status` prints) and
//! reads the events exchange through a queue of its own, so question and run events
//! show as they happen. Keys: q or Esc quits, Tab or the arrows switch the run shown.
use crate::cli::{MonitorArgs, ServiceArgs};
use crate::snapshot::Snapshot;
use anyhow::Result;
use ratatui::crossterm::event::{self, Event as Term, KeyCode, KeyEventKind};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Gauge, Paragraph, Sparkline};
use ratatui::Frame;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;
use tsst_messages::Event;

/// Points kept per sparkline (one per look).
const HISTORY: usize = 120;
/// Lines of recent events kept.
const RECENT: usize = 8;

pub async fn monitor(args: MonitorArgs, services: &ServiceArgs) -> Result<()> {
    let management = args.management.client(services)?;
    let d = services.require("monitor", "tsst-monitor").await?;
    Snapshot::prepare(&d).await?;
    let mut events = d.broker.events().await?;
    let mut board = Board::default();
    board.look(Snapshot::take(&d, management.as_ref(), Some(&args.runs)).await?);
    // Keys are read on a thread of their own: crossterm's read blocks.
    let (keys_tx, mut keys) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || loop {
        match event::read() {
            Ok(Term::Key(k)) if k.kind == KeyEventKind::Press => {
                if keys_tx.send(k.code).is_err() {
                    break;
                }
            }
            Ok(_) => {}
            Err(_) => break,
        }
    });
    let mut terminal = ratatui::init();
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(args.interval_secs.max(0.1)));
    let result = loop {
        if let Err(e) = terminal.draw(|f| board.draw(f)) {
            break Err(e.into());
        }
        tokio::select! {
            _ = ticks.tick() => match Snapshot::take(&d, management.as_ref(), Some(&args.runs)).await {
                Ok(s) => board.look(s),
                Err(e) => board.note(format!("cannot look at the cluster: {e:#}")),
            },
            event = events.next() => match event {
                Some(e) => board.event(e.body),
                None => {
                    board.note("events subscription lost; subscribing again".into());
                    match d.broker.events().await {
                        Ok(e) => events = e,
                        Err(e) => board.note(format!("cannot subscribe to events: {e}")),
                    }
                }
            },
            key = keys.recv() => match key {
                Some(KeyCode::Char('q') | KeyCode::Esc) | None => break Ok(()),
                Some(KeyCode::Tab | KeyCode::Right | KeyCode::Down) => board.next_run(1),
                Some(KeyCode::BackTab | KeyCode::Left | KeyCode::Up) => board.next_run(-1),
                Some(_) => {}
            },
        }
    };
    ratatui::restore();
    d.broker.close().await;
    result
}

/// What the dashboard shows: the last snapshot and the history behind it.
#[derive(Default)]
struct Board {
    last: Option<Snapshot>,
    /// Per queue: deliveries per second (management API) or ready messages.
    history: BTreeMap<String, VecDeque<u64>>,
    selected: usize,
    recent: VecDeque<String>,
    questions_done: u64,
    questions_failed: u64,
}

impl Board {
    fn look(&mut self, s: Snapshot) {
        for q in &s.queues {
            let point = q
                .deliver_rate
                .map_or(q.ready, |r| (r * 10.0).round() as u64);
            let h = self.history.entry(q.queue.clone()).or_default();
            h.push_back(point);
            while h.len() > HISTORY {
                h.pop_front();
            }
        }
        self.selected = self.selected.min(s.runs.len().saturating_sub(1));
        self.last = Some(s);
    }

    fn event(&mut self, e: Event) {
        match e {
            Event::QuestionDone { .. } => self.questions_done += 1,
            Event::QuestionFailed {
                run,
                question,
                reason,
            } => {
                self.questions_failed += 1;
                self.note(format!("{run}/{question} failed: {reason}"));
            }
            Event::RunStarted { run, questions } => {
                self.note(format!("{run} started: {questions} questions"))
            }
            Event::RunFinished {
                run,
                questions,
                failed,
            } => self.note(format!(
                "{run} finished: {questions} questions, {failed} failed"
            )),
            Event::ModelPublished { name, version, .. } => {
                self.note(format!("model {name} v{version} published"))
            }
            Event::QuestionSearched { .. } => {}
        }
    }

    fn note(&mut self, line: String) {
        self.recent.push_back(line);
        while self.recent.len() > RECENT {
            self.recent.pop_front();
        }
    }

    fn next_run(&mut self, step: isize) {
        let n = self.last.as_ref().map_or(0, |s| s.runs.len());
        if n > 0 {
            self.selected = (self.selected as isize + step).rem_euclid(n as isize) as usize;
        }
    }

    fn draw(&self, f: &mut Frame) {
        let Some(s) = &self.last else { return };
        let [title, queues, middle, recent] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(2 + 2 * s.queues.len() as u16),
            Constraint::Min(6),
            Constraint::Length(2 + RECENT as u16),
        ])
        .areas(f.area());
        let rates = s.queues.iter().any(|q| q.deliver_rate.is_some());
        f.render_widget(
            Paragraph::new(format!(
                "tsst monitor: namespace {}  |  queues from {}  |  events seen: {} done, {} failed  |  q quit, Tab run",
                s.namespace, s.queue_source, self.questions_done, self.questions_failed
            )),
            title,
        );
        self.draw_queues(f, s, queues, rates);
        let [runs, workers] =
            Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)])
                .areas(middle);
        self.draw_runs(f, s, runs);
        let lines: Vec<Line> = s
            .workers
            .iter()
            .map(|w| {
                Line::from(format!(
                    "{} [{}] {} seen {}s ago, models: {}",
                    w.name,
                    w.roles.join(","),
                    w.device,
                    s.taken.saturating_sub(w.seen),
                    w.models.len()
                ))
            })
            .collect();
        f.render_widget(
            Paragraph::new(lines).block(boxed(&format!("Workers ({} live)", s.workers.len()))),
            workers,
        );
        let dead: u64 = s.dead_letters.iter().map(|q| q.ready).sum();
        let mut lines: Vec<Line> = self.recent.iter().map(|l| Line::from(l.as_str())).collect();
        if dead > 0 {
            lines.insert(
                0,
                Line::from(format!("{dead} dead letters (tsst dlq list)")),
            );
        }
        f.render_widget(Paragraph::new(lines).block(boxed("Recent")), recent);
    }

    fn draw_queues(&self, f: &mut Frame, s: &Snapshot, area: Rect, rates: bool) {
        let what = if rates {
            "deliveries/s x10"
        } else {
            "ready messages"
        };
        let block = boxed(&format!("Queues (sparklines: {what})"));
        let inner = block.inner(area);
        f.render_widget(block, area);
        let rows = Layout::vertical(vec![Constraint::Length(2); s.queues.len()]).split(inner);
        for (q, row) in s.queues.iter().zip(rows.iter()) {
            let [text, spark] =
                Layout::horizontal([Constraint::Length(61), Constraint::Min(10)]).areas(*row);
            let opt = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
            let rate = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
            f.render_widget(
                Paragraph::new(format!(
                    "{:<20} ready {:>6} unacked {:>6}\n{:<20} consumers {:>3} in {:>6}/s out {:>6}/s",
                    q.queue,
                    q.ready,
                    opt(q.unacked),
                    "",
                    q.consumers,
                    rate(q.publish_rate),
                    rate(q.deliver_rate)
                )),
                text,
            );
            let data: Vec<u64> = self
                .history
                .get(&q.queue)
                .map(|h| h.iter().copied().collect())
                .unwrap_or_default();
            let width = spark.width as usize;
            let shown = &data[data.len().saturating_sub(width)..];
            f.render_widget(
                Sparkline::default()
                    .data(shown)
                    .style(Style::default().fg(Color::Cyan)),
                spark,
            );
        }
    }

    fn draw_runs(&self, f: &mut Frame, s: &Snapshot, area: Rect) {
        let block = boxed(&format!("Runs ({})", s.runs.len()));
        let inner = block.inner(area);
        f.render_widget(block, area);
        let Some(run) = s.runs.get(self.selected) else {
            let waiting = match s.unknown_runs.first() {
                Some(r) => format!("waiting for run {r}"),
                None => "no runs".to_owned(),
            };
            f.render_widget(Paragraph::new(waiting), inner);
            return;
        };
        let [gauge, rest] =
            Layout::vertical([Constraint::Length(3), Constraint::Min(0)]).areas(inner);
        let ratio = if run.total == 0 {
            1.0
        } else {
            f64::from(run.done) / f64::from(run.total)
        };
        let eta = run
            .eta_secs
            .map_or(String::new(), |e| format!(", ETA {:.0}s", e));
        f.render_widget(
            Gauge::default()
                .block(Block::default().title(format!(
                    "{} ({}/{})",
                    run.run,
                    self.selected + 1,
                    s.runs.len()
                )))
                .gauge_style(Style::default().fg(Color::Green))
                .ratio(ratio.clamp(0.0, 1.0))
                .label(format!(
                    "{}/{} finished, {} failed, {:.1} q/min{eta}",
                    run.done,
                    run.total,
                    run.failed,
                    run.rate.unwrap_or(0.0) * 60.0
                )),
            gauge,
        );
        let lines: Vec<Line> = s
            .runs
            .iter()
            .map(|r| {
                let state = if r.complete { "complete" } else { "searching" };
                Line::from(format!("{}: {}/{} {state}", r.run, r.done, r.total))
            })
            .collect();
        f.render_widget(Paragraph::new(lines), rest);
    }
}

fn boxed(title: &str) -> Block<'static> {
    Block::default()
        .borders(Borders::ALL)
        .title(title.to_owned())
}

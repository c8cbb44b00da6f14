//! How long one frame of a long conversation takes to draw: 500 messages (user turns,
//! replies with markdown and code, tool actions) in a 200x50 terminal. The first frame
//! wraps what is visible; later frames use the per-cell cache, as in the running app.
//!
//! `cargo bench --bench tui_frame` prints the median and worst of 200 frames.

use std::time::Instant;

use lcode::protocol::{Event, TierEntry, TurnEnd};
use lcode::tui::app::App;
use lcode::tui::keys::Keys;
use lcode::tui::theme::Theme;

fn main() {
    let mut app = App::new(Theme::load("dark", false).unwrap(), Keys::defaults());
    app.on_event(Event::Started {
        tiers: ["tiny", "fast", "quality"]
            .iter()
            .map(|t| TierEntry {
                name: t.to_string(),
                installed: true,
            })
            .collect(),
        sandbox: true,
    });
    app.on_event(Event::ModelLoaded {
        model: "fast".into(),
        name: "Qwen2.5 Coder 0.5B Instruct".into(),
        context_size: 8192,
        rss_mb: 880.0,
        endpoint: None,
        prefix_cache: true,
    });
    for i in 0..250 {
        app.chat.push(lcode::tui::chat::CellKind::User(format!(
            "question {i}: why does the parser fail on nested lists?"
        )));
        app.on_event(Event::Action {
            id: i,
            name: "read".into(),
            detail: "src/parser.rs".into(),
        });
        app.on_event(Event::Text {
            delta: format!("The parser in `src/parser.rs` **fails** because of recursion depth {i}.\n\n- first, the lexer\n- then the parser\n\n```rust\nfn parse(input: &str) -> Result<Ast> {{\n    let tokens = lex(input)?;\n    Parser::new(tokens).parse()\n}}\n```\nThat is the fix.\n"),
        });
        app.on_event(Event::TurnDone {
            reason: TurnEnd::Answered,
        });
    }
    let backend = ratatui::backend::TestBackend::new(200, 50);
    let mut term = ratatui::Terminal::new(backend).unwrap();
    let first = Instant::now();
    term.draw(|f| app.render(f)).unwrap();
    let first = first.elapsed();
    let mut times = Vec::new();
    for i in 0..200 {
        // A streaming reply changes the last cell every frame, as in a live turn.
        app.on_event(Event::Text {
            delta: format!("token{i} "),
        });
        let t = Instant::now();
        term.draw(|f| app.render(f)).unwrap();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "tui_frame: {} cells, 200x50: first frame {:.2} ms; streaming frames median {:.3} ms, worst {:.3} ms",
        app.chat.cells.len(),
        first.as_secs_f64() * 1000.0,
        times[times.len() / 2],
        times[times.len() - 1]
    );
}

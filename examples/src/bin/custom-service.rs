//! custom-service: quicproquo as a framework for an application of its own.
//!
//! A small note board is declared in `examples/custom-service/methods.toml` (two methods and
//! one push event in one group, `board`) with its messages in `custom-service/proto/`.
//! `examples/build.rs` runs `qpq-codegen` on it, which generates the `BoardService` trait
//! (the group's handlers; `NotesService`, the whole service, holds for any type that
//! implements every group's trait), the dispatch, the typed `NotesClient` and the `Event`
//! enum. This program implements the trait, serves it over QUIC on loopback, and a client
//! adds and lists notes while a second connection receives the `NoteAdded` pushes.
//!
//! Run it: `cargo run -p qpq-examples --bin custom-service`

use std::sync::{Arc, Mutex};

use qpq_examples::notes::proto::{
    AddNoteRequest, AddNoteResponse, ListNotesRequest, ListNotesResponse, Note,
};
use qpq_examples::notes::{BoardService, Event, NotesClient, NotesPush, NotesServer};
use qpq_runtime::{
    Anonymous, ClientOptions, ConnectionInfo, Ctx, NoAuth, Server, ServerOptions, Status,
    TlsIdentity,
};

/// The board: notes, and the connections that want to hear about new ones.
#[derive(Default)]
struct Board {
    notes: Mutex<Vec<Note>>,
    readers: Mutex<Vec<ConnectionInfo>>,
}

impl BoardService for Board {
    async fn add_note(
        &self,
        _ctx: Ctx<Anonymous>,
        request: AddNoteRequest,
    ) -> Result<AddNoteResponse, Status> {
        if request.text.is_empty() || request.text.len() > 1024 {
            return Err(Status::bad_request("a note is 1 byte to 1 KiB of text"));
        }
        let note = {
            let mut notes = self.notes.lock().map_err(|_| Status::internal())?;
            let note = Note {
                id: notes.len() as u64 + 1,
                author: request.author,
                text: request.text,
            };
            notes.push(note.clone());
            note
        };
        let readers = self.readers.lock().map_err(|_| Status::internal())?.clone();
        for reader in readers {
            // Pushes are hints; a slow reader may miss one and list the board instead.
            let _ = reader.push().note_added(&note);
        }
        Ok(AddNoteResponse { id: note.id })
    }

    async fn list_notes(
        &self,
        ctx: Ctx<Anonymous>,
        _request: ListNotesRequest,
    ) -> Result<ListNotesResponse, Status> {
        // Whoever lists the board is subscribed to what comes next.
        let mut readers = self.readers.lock().map_err(|_| Status::internal())?;
        readers.retain(|r| !r.is_closed());
        if !readers.iter().any(|r| r.id() == ctx.connection().id()) {
            readers.push(ctx.connection().clone());
        }
        drop(readers);
        let notes = self.notes.lock().map_err(|_| Status::internal())?.clone();
        Ok(ListNotesResponse { notes })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Serve the board on a loopback port with a fresh self-signed certificate.
    let identity = TlsIdentity::generate(&["localhost"])?;
    let dispatch = NotesServer::new(Arc::new(Board::default()), Arc::new(NoAuth)).into_dispatch();
    let server = Server::bind(
        "127.0.0.1:0".parse()?,
        &identity,
        dispatch,
        ServerOptions::default(),
    )?;
    let addr = server.local_addr()?;
    let handle = server.handle();
    tokio::spawn(server.serve());
    println!("notes server on {addr}");

    // A reader connects, lists the (empty) board and waits for pushes.
    let options = ClientOptions::pinned(identity.cert.clone());
    let reader = NotesClient::new(qpq_runtime::connect(addr, &options).await?);
    let mut events = reader
        .events()
        .expect("a fresh connection has its event stream");
    let board = reader.list_notes(ListNotesRequest {}).await?;
    println!("board has {} notes", board.notes.len());

    // A writer adds two notes over its own connection.
    let writer = NotesClient::new(qpq_runtime::connect(addr, &options).await?);
    for text in ["buy milk", "water the plants"] {
        let added = writer
            .add_note(AddNoteRequest {
                author: "ada".into(),
                text: text.into(),
            })
            .await?;
        println!("added note {}", added.id);
    }

    // The reader hears about both, in order.
    for _ in 0..2 {
        match events.next().await {
            Some(Ok(Event::NoteAdded(note))) => {
                println!("pushed: note {} by {}: {}", note.id, note.author, note.text)
            }
            other => anyhow::bail!("unexpected event: {other:?}"),
        }
    }

    // Bad input gets a clear status, not a crash.
    let refused = writer
        .add_note(AddNoteRequest {
            author: "ada".into(),
            text: String::new(),
        })
        .await
        .expect_err("an empty note is refused");
    println!("refused: {refused}");

    let board = writer.list_notes(ListNotesRequest {}).await?;
    println!("board has {} notes", board.notes.len());
    handle.shutdown();
    Ok(())
}

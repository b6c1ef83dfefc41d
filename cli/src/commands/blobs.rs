//! `blob put` and `blob get`: chunked uploads and resumable, verified downloads, with a
//! progress bar.

use anyhow::{Context as _, anyhow};
use qpq_client::profile::{from_hex, to_hex};
use serde_json::json;

use crate::args::BlobCommand;
use crate::context::{Ctx, rpc};
use crate::progress::Progress;

/// Runs one `blob` subcommand.
pub(crate) async fn run(ctx: &Ctx, command: BlobCommand) -> anyhow::Result<()> {
    let (_, token) = ctx.session()?;
    let client = ctx.connect().await?;
    match command {
        BlobCommand::Put {
            file,
            mime,
            chunk_size,
        } => {
            let total = std::fs::metadata(&file)
                .with_context(|| format!("could not read {}", file.display()))?
                .len();
            let mut progress = Progress::new("uploading", total, chunk_size as u64);
            let id = qpq_client::blob::upload_file(
                &client,
                &token,
                &file,
                &mime,
                chunk_size,
                |sent, _| progress.update(sent),
            )
            .await
            .map_err(|e| match e {
                qpq_client::blob::BlobError::Rpc(e) => rpc(e),
                other => anyhow!(other),
            })
            .with_context(|| format!("uploading {} failed", file.display()))?;
            let id = to_hex(&id);
            ctx.print(json!({"blob_id": id, "size": total}), || {
                format!("{id}  {} ({total} bytes)", file.display())
            });
        }
        BlobCommand::Get { id, out } => {
            let blob_id: [u8; 32] =
                from_hex(&id)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| {
                        anyhow!(
                            "`{id}` is not a blob id: give the 64 hex digits `qpq blob put` printed"
                        )
                    })?;
            let mut progress: Option<Progress> = None;
            let got = qpq_client::blob::download_to_file(
                &client,
                &token,
                &blob_id,
                &out,
                |have, total| {
                    progress
                        .get_or_insert_with(|| {
                            Progress::new("downloading", total, qpq_client::blob::MAX_CHUNK as u64)
                        })
                        .update(have)
                },
            )
            .await
            .map_err(|e| match e {
                qpq_client::blob::BlobError::Rpc(e) => rpc(e),
                other => anyhow!(other),
            })
            .with_context(|| format!("downloading {id} failed"))?;
            ctx.print(
                json!({"blob_id": id, "out": out.display().to_string(), "size": got.total_size, "resumed_from": got.resumed_from, "sha256_verified": true, "mime_type": got.mime_type}),
                || {
                    let resumed = if got.resumed_from > 0 {
                        format!(", resumed at byte {}", got.resumed_from)
                    } else {
                        String::new()
                    };
                    format!(
                        "saved {} ({} bytes{resumed}); SHA-256 verified",
                        out.display(),
                        got.total_size
                    )
                },
            );
        }
    }
    Ok(())
}

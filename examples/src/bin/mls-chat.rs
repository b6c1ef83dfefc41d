//! mls-chat: a real MLS group (RFC 9420, with openmls) whose every message crosses a qpq
//! server as ciphertext.
//!
//! Starts a `qpq-server` in this process, then Alice, Bob and Carol each connect (pinning the
//! server's certificate), register and log in with OPAQUE, and:
//! 1. upload a hybrid X25519 + ML-KEM-768 public key signed by their identity key; Alice
//!    fetches Bob's and Carol's and checks the signatures against their identity keys;
//! 2. upload MLS KeyPackages (one single-use, one last-resort); Alice fetches one of each
//!    member's (FetchKeyPackage) and checks it names that member;
//! 3. Alice creates the channel (CreateChannel) and an MLS group whose group id is the
//!    server's channel id, then adds Bob with an MLS commit submitted through RotateKeys; the
//!    server queues the Welcome for Bob only once the commit has won, and Bob joins from it;
//! 4. Bob's key-update commit and Alice's commit adding Carol race for the same epoch: the
//!    server takes the first and answers the second with Conflict, so Alice merges Bob's
//!    commit from her queue and commits again for the next epoch; Bob merges it, Carol joins;
//! 5. they exchange application messages, MLS ciphertext end to end, through Enqueue and
//!    Fetch.
//!
//! The server only ever holds KeyPackages, commits, welcomes and ciphertexts: the test in
//! `tests/examples.rs` runs this with `--data-dir` and checks that no plaintext appears in
//! any file under it. openmls is synchronous; its in-memory storage makes each call short
//! enough to make from async code here (with a storage on disk, use `spawn_blocking`).
//!
//! Run it: `cargo run -p qpq-examples --bin mls-chat [-- --data-dir DIR]` (default: a
//! temporary directory, removed at the end).

use std::path::PathBuf;

use anyhow::{Context as _, anyhow, bail, ensure};
use bytes::Bytes;
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use qpq_client::keys::{HybridSecret, sign_hybrid_key, verify_hybrid_key};
use qpq_client::profile::to_hex;
use qpq_client::{IdentityKey, Login, QpqClient, StatusCode, proto};
use qpq_runtime::ClientOptions;

/// X25519 for HPKE, AES-128-GCM, SHA-256, Ed25519 signatures: the mandatory MLS suite.
const SUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;
/// The channel's display name: server-visible metadata, unlike the messages.
const CHANNEL_NAME: &str = "mls-chat demo channel";
/// What the members say; none of it may reach the server in the clear.
const ALICE_SAYS: &str = "Alice: the launch code is 0451, keep it in the group";
const BOB_SAYS: &str = "Bob: got it, 0451 stays between us three";
const CAROL_SAYS: &str = "Carol: joined late but I can read everything from here on";

/// One person: a qpq account and an MLS client.
struct Member {
    name: &'static str,
    client: QpqClient,
    session: Login,
    identity: IdentityKey,
    provider: OpenMlsRustCrypto,
    signer: SignatureKeyPair,
    credential: CredentialWithKey,
    group: Option<MlsGroup>,
}

impl Member {
    async fn join_server(
        server: &qpq_server::RunningServer,
        name: &'static str,
    ) -> anyhow::Result<Self> {
        let options = ClientOptions::pinned(server.identity.cert.clone());
        let client = QpqClient::new(qpq_runtime::connect(server.addr, &options).await?);
        let identity = IdentityKey::generate();
        let password = format!("{name}'s long passphrase");
        qpq_client::register(&client, name, password.as_bytes(), &identity.public()).await?;
        let session = qpq_client::login(&client, name, password.as_bytes(), None).await?;

        // The MLS side: a basic credential naming the user, and its own signature key.
        let provider = OpenMlsRustCrypto::default();
        let signer = SignatureKeyPair::new(SUITE.signature_algorithm())
            .map_err(|e| anyhow!("signature key: {e:?}"))?;
        signer
            .store(provider.storage())
            .map_err(|e| anyhow!("storing the signature key: {e:?}"))?;
        let credential = CredentialWithKey {
            credential: BasicCredential::new(name.as_bytes().to_vec()).into(),
            signature_key: signer.to_public_vec().into(),
        };
        Ok(Self {
            name,
            client,
            session,
            identity,
            provider,
            signer,
            credential,
            group: None,
        })
    }

    fn token(&self) -> Bytes {
        self.session.token.clone()
    }

    fn group(&self) -> anyhow::Result<&MlsGroup> {
        self.group
            .as_ref()
            .ok_or_else(|| anyhow!("{} is not in the group", self.name))
    }

    fn epoch(&self) -> anyhow::Result<u64> {
        Ok(self.group()?.epoch().as_u64())
    }

    /// A commit adding `key_package`'s owner, and the Welcome for them (pending until merged).
    fn add(&mut self, key_package: &KeyPackage) -> anyhow::Result<(MlsMessageOut, MlsMessageOut)> {
        let name = self.name;
        let group = self
            .group
            .as_mut()
            .ok_or_else(|| anyhow!("{name} is not in the group"))?;
        let (commit, welcome, _) = group
            .add_members(
                &self.provider,
                &self.signer,
                std::slice::from_ref(key_package),
            )
            .map_err(|e| anyhow!("{name} cannot add a member: {e:?}"))?;
        Ok((commit, welcome))
    }

    /// A commit updating this member's own leaf key (pending until merged).
    fn self_update(&mut self) -> anyhow::Result<MlsMessageOut> {
        let name = self.name;
        let group = self
            .group
            .as_mut()
            .ok_or_else(|| anyhow!("{name} is not in the group"))?;
        let bundle = group
            .self_update(&self.provider, &self.signer, LeafNodeParameters::default())
            .map_err(|e| anyhow!("{name} cannot update: {e:?}"))?;
        Ok(bundle.commit().clone())
    }

    /// Applies this member's own pending commit (after the server accepted it).
    fn merge_pending(&mut self) -> anyhow::Result<u64> {
        let name = self.name;
        let group = self
            .group
            .as_mut()
            .ok_or_else(|| anyhow!("{name} is not in the group"))?;
        group
            .merge_pending_commit(&self.provider)
            .map_err(|e| anyhow!("{name} cannot merge: {e:?}"))?;
        Ok(group.epoch().as_u64())
    }

    /// Drops this member's own pending commit (after the server refused it).
    fn clear_pending(&mut self) -> anyhow::Result<()> {
        let name = self.name;
        let group = self
            .group
            .as_mut()
            .ok_or_else(|| anyhow!("{name} is not in the group"))?;
        group
            .clear_pending_commit(self.provider.storage())
            .map_err(|e| anyhow!("{name} cannot clear its commit: {e:?}"))
    }

    fn user_ref(&self) -> proto::UserRef {
        proto::UserRef {
            target: Some(proto::user_ref::Target::IdentityKey(
                Bytes::copy_from_slice(&self.identity.public()),
            )),
        }
    }

    /// Uploads a signed hybrid X25519 + ML-KEM-768 key.
    async fn upload_hybrid_key(&self) -> anyhow::Result<()> {
        let secret = HybridSecret::generate();
        let key = sign_hybrid_key(
            &self.identity,
            &secret.x25519_public(),
            &secret.mlkem768_public(),
            1,
        );
        self.client
            .upload_hybrid_key(proto::UploadHybridKeyRequest {
                session_token: self.token(),
                key: Some(key),
            })
            .await?;
        Ok(())
    }

    /// Uploads one single-use KeyPackage and one last-resort KeyPackage.
    async fn upload_key_packages(&self) -> anyhow::Result<()> {
        for last_resort in [false, true] {
            let mut builder = KeyPackage::builder();
            if last_resort {
                builder = builder.mark_as_last_resort();
            }
            let bundle = builder
                .build(SUITE, &self.provider, &self.signer, self.credential.clone())
                .map_err(|e| anyhow!("KeyPackage: {e:?}"))?;
            let bytes = bundle.key_package().tls_serialize_detached()?;
            let uploaded = self
                .client
                .upload_key_package(proto::UploadKeyPackageRequest {
                    session_token: self.token(),
                    key_package: Bytes::from(bytes),
                    last_resort,
                })
                .await?;
            if last_resort {
                println!(
                    "{} uploaded KeyPackages: {} single-use queued, last resort stored: {}",
                    self.name, uploaded.queue_depth, uploaded.has_last_resort
                );
            }
        }
        Ok(())
    }

    /// Fetches `other`'s KeyPackage from the server, validates it and checks it names them.
    async fn fetch_key_package(&self, other: &Member) -> anyhow::Result<KeyPackage> {
        let fetched = self
            .client
            .fetch_key_package(proto::FetchKeyPackageRequest {
                session_token: self.token(),
                identity_key: Bytes::copy_from_slice(&other.identity.public()),
            })
            .await?;
        ensure!(
            !fetched.key_package.is_empty(),
            "{} has no KeyPackage",
            other.name
        );
        let key_package = KeyPackageIn::tls_deserialize_exact(&fetched.key_package[..])?
            .validate(self.provider.crypto(), ProtocolVersion::Mls10)
            .map_err(|e| anyhow!("{}'s KeyPackage does not verify: {e:?}", other.name))?;
        let named = BasicCredential::try_from(key_package.leaf_node().credential().clone())
            .map_err(|e| anyhow!("credential: {e:?}"))?;
        ensure!(
            named.identity() == other.name.as_bytes(),
            "the KeyPackage fetched for {} names someone else",
            other.name
        );
        println!(
            "{} fetched {}'s KeyPackage ({} bytes{})",
            self.name,
            other.name,
            fetched.key_package.len(),
            if fetched.last_resort {
                ", last resort"
            } else {
                ""
            }
        );
        Ok(key_package)
    }

    /// Takes the messages waiting in this member's queue.
    async fn fetch(&self) -> anyhow::Result<Vec<proto::QueuedMessage>> {
        let page = self
            .client
            .fetch(proto::FetchRequest {
                session_token: self.token(),
                limit: 100,
            })
            .await?;
        Ok(page.messages)
    }

    /// Joins the group from the Welcome in this member's queue.
    async fn join_from_welcome(&mut self, channel_id: &[u8]) -> anyhow::Result<()> {
        let messages = self.fetch().await?;
        let [queued] = &messages[..] else {
            bail!(
                "{} expected one message (the Welcome), got {}",
                self.name,
                messages.len()
            );
        };
        ensure!(
            queued.channel_id[..] == *channel_id,
            "the Welcome is tagged with the channel"
        );
        let welcome = match MlsMessageIn::tls_deserialize_exact(&queued.payload[..])?.extract() {
            MlsMessageBodyIn::Welcome(welcome) => welcome,
            _ => bail!("{} expected a Welcome", self.name),
        };
        let config = MlsGroupJoinConfig::builder()
            .use_ratchet_tree_extension(true)
            .build();
        let group = StagedWelcome::new_from_welcome(&self.provider, &config, welcome, None)
            .map_err(|e| anyhow!("{} cannot stage the Welcome: {e:?}", self.name))?
            .into_group(&self.provider)
            .map_err(|e| anyhow!("{} cannot join: {e:?}", self.name))?;
        ensure!(
            group.group_id().as_slice() == channel_id,
            "group id = channel id"
        );
        println!(
            "{} joined from the Welcome sent by {}: epoch {}, {} members",
            self.name,
            queued.sender,
            group.epoch().as_u64(),
            group.members().count()
        );
        self.group = Some(group);
        Ok(())
    }

    /// Processes every message in the queue: merges commits, decrypts application messages.
    async fn receive(&mut self) -> anyhow::Result<Vec<String>> {
        let mut texts = Vec::new();
        for queued in self.fetch().await? {
            let message = MlsMessageIn::tls_deserialize_exact(&queued.payload[..])?
                .try_into_protocol_message()
                .map_err(|e| anyhow!("not a group message: {e:?}"))?;
            let provider = &self.provider;
            let name = self.name;
            let group = self
                .group
                .as_mut()
                .ok_or_else(|| anyhow!("{name} is not in the group"))?;
            let processed = group.process_message(provider, message).map_err(|e| {
                anyhow!(
                    "{name} cannot process a message from {}: {e:?}",
                    queued.sender
                )
            })?;
            match processed.into_content() {
                ProcessedMessageContent::ApplicationMessage(application) => {
                    let text = String::from_utf8(application.into_bytes())?;
                    println!(
                        "{name} decrypted {} bytes of ciphertext from {}: {text}",
                        queued.payload.len(),
                        queued.sender
                    );
                    texts.push(text);
                }
                ProcessedMessageContent::StagedCommitMessage(staged) => {
                    group
                        .merge_staged_commit(provider, *staged)
                        .map_err(|e| anyhow!("{name} cannot merge: {e:?}"))?;
                    println!(
                        "{name} merged {}'s commit: epoch {}, {} members",
                        queued.sender,
                        group.epoch().as_u64(),
                        group.members().count()
                    );
                }
                _ => bail!("{name} got an unexpected proposal"),
            }
        }
        Ok(texts)
    }

    /// Submits a commit (and welcomes) for the group's current epoch through RotateKeys.
    async fn submit_commit(
        &self,
        channel_id: &Bytes,
        epoch: u64,
        commit: &MlsMessageOut,
        welcomes: Vec<(&Member, &MlsMessageOut)>,
    ) -> Result<u64, qpq_client::RpcError> {
        let welcomes = welcomes
            .into_iter()
            .map(|(to, welcome)| proto::WelcomeDelivery {
                recipient: Some(to.user_ref()),
                welcome: Bytes::from(welcome.tls_serialize_detached().unwrap_or_default()),
            })
            .collect();
        let rotated = self
            .client
            .rotate_keys(proto::RotateKeysRequest {
                session_token: self.token(),
                channel_id: channel_id.clone(),
                epoch,
                commit: Bytes::from(commit.tls_serialize_detached().unwrap_or_default()),
                welcomes,
            })
            .await?;
        Ok(rotated.new_epoch)
    }

    /// Encrypts `text` for the group and enqueues the ciphertext for each of `to`.
    async fn say(&mut self, channel_id: &Bytes, text: &str, to: &[&Member]) -> anyhow::Result<()> {
        let provider = &self.provider;
        let signer = &self.signer;
        let name = self.name;
        let group = self
            .group
            .as_mut()
            .ok_or_else(|| anyhow!("{name} is not in the group"))?;
        let ciphertext = group
            .create_message(provider, signer, text.as_bytes())
            .map_err(|e| anyhow!("{name} cannot encrypt: {e:?}"))?
            .tls_serialize_detached()?;
        ensure!(
            !ciphertext.windows(text.len()).any(|w| w == text.as_bytes()),
            "the ciphertext contains the plaintext"
        );
        for recipient in to {
            self.client
                .enqueue(proto::EnqueueRequest {
                    session_token: self.token(),
                    recipient: Some(recipient.user_ref()),
                    payload: Bytes::from(ciphertext.clone()),
                    ttl_secs: 0,
                    channel_id: channel_id.clone(),
                })
                .await?;
        }
        println!(
            "{name} sent {} bytes of MLS ciphertext to {}",
            ciphertext.len(),
            to.iter().map(|m| m.name).collect::<Vec<_>>().join(" and ")
        );
        Ok(())
    }
}

/// `--data-dir DIR` (kept afterwards) or a temporary directory.
fn data_dir() -> anyhow::Result<(PathBuf, Option<tempfile::TempDir>)> {
    let mut args = std::env::args().skip(1);
    match (args.next().as_deref(), args.next()) {
        (None, _) => {
            let dir = tempfile::tempdir()?;
            Ok((dir.path().to_owned(), Some(dir)))
        }
        (Some("--data-dir"), Some(dir)) if args.next().is_none() => Ok((dir.into(), None)),
        _ => bail!("usage: mls-chat [--data-dir DIR]"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (dir, _temporary) = data_dir()?;
    let server = qpq_server::start(qpq_server::Config::for_data_dir(
        "127.0.0.1:0".parse()?,
        &dir,
    ))
    .await
    .context("could not start the server")?;
    println!("server on {} with data in {}", server.addr, dir.display());

    let mut alice = Member::join_server(&server, "alice").await?;
    let mut bob = Member::join_server(&server, "bob").await?;
    let mut carol = Member::join_server(&server, "carol").await?;
    println!("alice, bob and carol registered and logged in");

    // 1. Hybrid post-quantum keys, signed by each identity and checked by the fetcher.
    for member in [&alice, &bob, &carol] {
        member.upload_hybrid_key().await?;
    }
    let keys = alice
        .client
        .fetch_hybrid_keys(proto::FetchHybridKeysRequest {
            session_token: alice.token(),
            identity_keys: [&bob, &carol]
                .iter()
                .map(|m| Bytes::copy_from_slice(&m.identity.public()))
                .collect(),
        })
        .await?;
    ensure!(keys.entries.len() == 2, "both hybrid keys found");
    for (entry, member) in keys.entries.iter().zip([&bob, &carol]) {
        let key = entry
            .key
            .as_ref()
            .ok_or_else(|| anyhow!("entry without a key"))?;
        ensure!(
            entry.identity_key[..] == member.identity.public(),
            "entries in request order"
        );
        ensure!(
            verify_hybrid_key(&member.identity.public(), key),
            "{}'s hybrid key is not signed by their identity key",
            member.name
        );
        println!(
            "alice verified {}'s hybrid key: x25519 {}…, ml-kem-768 {} bytes, signed by {}…",
            member.name,
            &to_hex(&key.x25519_public)[..16],
            key.mlkem768_public.len(),
            &to_hex(&member.identity.public())[..16]
        );
    }

    // 2. KeyPackages.
    bob.upload_key_packages().await?;
    carol.upload_key_packages().await?;
    let bob_kp = alice.fetch_key_package(&bob).await?;
    let carol_kp = alice.fetch_key_package(&carol).await?;

    // 3. The channel and the group, with the server's channel id as the MLS group id.
    let created = alice
        .client
        .create_channel(proto::CreateChannelRequest {
            session_token: alice.token(),
            name: CHANNEL_NAME.to_owned(),
            description: String::new(),
            initial_members: Vec::new(),
            initial_epoch: 0,
            settings: Default::default(),
        })
        .await?;
    let channel_id = created.channel_id.clone();
    println!("alice created channel {}", to_hex(&channel_id));
    let config = MlsGroupCreateConfig::builder()
        .ciphersuite(SUITE)
        .use_ratchet_tree_extension(true)
        .build();
    alice.group = Some(
        MlsGroup::new_with_group_id(
            &alice.provider,
            &alice.signer,
            &config,
            GroupId::from_slice(&channel_id),
            alice.credential.clone(),
        )
        .map_err(|e| anyhow!("group: {e:?}"))?,
    );

    let (commit, welcome) = alice.add(&bob_kp)?;
    let epoch = alice.epoch()?;
    let new_epoch = alice
        .submit_commit(&channel_id, epoch, &commit, vec![(&bob, &welcome)])
        .await?;
    ensure!(
        alice.merge_pending()? == new_epoch,
        "server and group agree on the epoch"
    );
    println!("alice's commit adding bob won: epoch {new_epoch}");
    bob.join_from_welcome(&channel_id).await?;

    // 4. Two commits for the same epoch: Bob's key update reaches the server first.
    let epoch = alice.epoch()?;
    let (add_carol, carol_welcome) = alice.add(&carol_kp)?;
    let update = bob.self_update()?;
    let won = bob
        .submit_commit(&channel_id, epoch, &update, vec![])
        .await?;
    ensure!(
        bob.merge_pending()? == won,
        "bob's group follows the server"
    );
    println!("bob's key update won epoch {epoch}: now {won}");
    match alice
        .submit_commit(
            &channel_id,
            epoch,
            &add_carol,
            vec![(&carol, &carol_welcome)],
        )
        .await
    {
        Err(error) if error.code() == Some(StatusCode::Conflict) => {
            println!("alice's commit for epoch {epoch} lost: {error}")
        }
        other => bail!("expected Conflict for the stale commit, got {other:?}"),
    }
    // Carol got nothing: a Welcome is delivered only with a winning commit.
    ensure!(
        carol.fetch().await?.is_empty(),
        "no Welcome for a losing commit"
    );
    alice.clear_pending()?;
    alice.receive().await?;
    let epoch = alice.epoch()?;
    let (add_carol, carol_welcome) = alice.add(&carol_kp)?;
    let won = alice
        .submit_commit(
            &channel_id,
            epoch,
            &add_carol,
            vec![(&carol, &carol_welcome)],
        )
        .await?;
    ensure!(
        alice.merge_pending()? == won,
        "alice's group follows the server"
    );
    println!("alice's commit adding carol, remade for epoch {epoch}, won: epoch {won}");
    bob.receive().await?;
    carol.join_from_welcome(&channel_id).await?;
    for member in [&alice, &bob, &carol] {
        ensure!(
            member.epoch()? == won,
            "{} is at the server's epoch",
            member.name
        );
    }

    // 5. Application messages, ciphertext end to end.
    alice.say(&channel_id, ALICE_SAYS, &[&bob, &carol]).await?;
    ensure!(bob.receive().await? == [ALICE_SAYS], "bob reads alice");
    ensure!(carol.receive().await? == [ALICE_SAYS], "carol reads alice");
    bob.say(&channel_id, BOB_SAYS, &[&alice, &carol]).await?;
    carol.say(&channel_id, CAROL_SAYS, &[&alice, &bob]).await?;
    ensure!(
        alice.receive().await? == [BOB_SAYS, CAROL_SAYS],
        "alice reads both"
    );
    ensure!(carol.receive().await? == [BOB_SAYS], "carol reads bob");
    ensure!(bob.receive().await? == [CAROL_SAYS], "bob reads carol");

    let members = alice
        .client
        .list_group_members(proto::ListGroupMembersRequest {
            session_token: alice.token(),
            channel_id: channel_id.clone(),
            limit: 0,
            cursor: Bytes::new(),
        })
        .await?;
    let channel = members.channel.unwrap_or_default();
    println!(
        "the server's record: {} members, epoch {} (the group's too)",
        members.members.len(),
        channel.epoch
    );
    ensure!(
        channel.epoch == won && members.members.len() == 3,
        "server record matches the group"
    );
    server.shutdown().await;
    println!("done");
    Ok(())
}

//! The command line: the global flags, every command and subcommand with its help text and
//! example, as clap parses them. Nothing here runs a command (`main.rs` dispatches), so the
//! modules in `commands/` can name their subcommand enum without importing `main.rs`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Talk to a quicproquo server: register, log in, send and receive end-to-end messages.
///
/// The profile directory (--profile) keeps your identity key and session between runs, with
/// private file modes. Passwords are read from QPQ_PASSWORD, from stdin with
/// --password-stdin, or asked for on the terminal.
///
/// Example:
///   qpq --server 127.0.0.1:5001 --ca-cert data/server-cert.der register alice
///   qpq send bob "hello"
///   qpq watch
///   qpq blob put holiday.jpg
#[derive(Debug, Parser)]
#[command(name = "qpq", version)]
pub(crate) struct Cli {
    /// Server address (host:port) [default: the profile's, else 127.0.0.1:5001].
    #[arg(long, env = "QPQ_SERVER", global = true)]
    pub(crate) server: Option<String>,
    /// The server's certificate (DER) to pin [default: the profile's, else
    /// data/server-cert.der].
    #[arg(long, env = "QPQ_CA_CERT", global = true)]
    pub(crate) ca_cert: Option<PathBuf>,
    /// Profile directory holding the identity key and session [default: ~/.qpq].
    #[arg(long, env = "QPQ_PROFILE", global = true)]
    pub(crate) profile: Option<PathBuf>,
    /// Print JSON (one object per line) instead of text, for scripts.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// Read the password from the first line of stdin.
    #[arg(long, global = true)]
    pub(crate) password_stdin: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create an account: generates an identity key, registers with OPAQUE and logs in.
    ///
    /// Example: qpq register alice
    Register {
        /// The username: 1-64 of a-z 0-9 . _ -
        username: String,
    },
    /// Log in with OPAQUE and keep the session in the profile.
    ///
    /// Example: qpq login alice
    Login {
        /// The username [default: the profile's].
        username: Option<String>,
        /// Bind the session to this device id (hex).
        #[arg(long)]
        device: Option<String>,
    },
    /// Forget the session kept in the profile.
    ///
    /// Example: qpq logout
    Logout,
    /// Send a message to a user (by username, or by identity key in hex).
    ///
    /// Example: qpq send bob "lunch at noon?"
    Send {
        /// Recipient: username or 64 hex digits of an identity key.
        recipient: String,
        /// The message text (or use --file).
        message: Option<String>,
        /// Send the contents of this file instead.
        #[arg(long, conflicts_with = "message")]
        file: Option<PathBuf>,
        /// Time to live in seconds (0: the server's default).
        #[arg(long, default_value_t = 0)]
        ttl: u32,
    },
    /// Take messages off your queue and print them (they are removed).
    ///
    /// Example: qpq fetch --limit 10
    Fetch {
        /// Most messages to take (0: the server's default page).
        #[arg(long, default_value_t = 0)]
        limit: u32,
        /// Wait up to this many seconds for a message when the queue is empty.
        #[arg(long)]
        wait: Option<u32>,
    },
    /// Print queued messages without removing them (acknowledge them with `ack`).
    ///
    /// Example: qpq peek
    Peek {
        /// Most messages to show (0: the server's default page).
        #[arg(long, default_value_t = 0)]
        limit: u32,
        /// Show only messages after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: u64,
    },
    /// Remove messages from your queue by sequence number.
    ///
    /// Example: qpq ack 1 2 3
    Ack {
        /// Sequence numbers.
        #[arg(required = true)]
        seqs: Vec<u64>,
    },
    /// Print server pushes (new messages, typing, presence, membership) as they arrive.
    ///
    /// Example: qpq watch --count 1 --timeout 30
    Watch {
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this many seconds.
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Look a user up: username to identity key.
    ///
    /// Example: qpq whois bob
    Whois {
        /// The username.
        username: String,
    },
    /// Check that the server is up: status, version, uptime.
    ///
    /// Example: qpq health
    Health,
    /// Delete your account and everything the server keeps for it. Irreversible.
    ///
    /// Example: qpq delete-account --yes
    DeleteAccount {
        /// Confirm the deletion.
        #[arg(long)]
        yes: bool,
    },
    /// Upload your MLS KeyPackages and hybrid post-quantum key; fetch another user's.
    ///
    /// Example: qpq keys upload kp.bin --last-resort
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Channels (the server's record of MLS groups): create, add, remove, list members.
    ///
    /// Example: qpq channel create team --member bob --member carol
    Channel {
        #[command(subcommand)]
        command: ChannelCommand,
    },
    /// Store and retrieve attachments: chunked upload, resumable verified download.
    ///
    /// Example: qpq blob put holiday.jpg
    Blob {
        #[command(subcommand)]
        command: BlobCommand,
    },
    /// Your account's devices: register this one, list them, revoke a lost one.
    ///
    /// Example: qpq device list
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
    },
    /// Keep a file on the server encrypted with a key only your password recreates.
    ///
    /// Example: qpq recovery store backup-codes.txt
    Recovery {
        #[command(subcommand)]
        command: RecoveryCommand,
    },
    /// Key transparency: check the server's log of username-to-key bindings.
    ///
    /// Example: qpq kt audit bob
    Kt {
        #[command(subcommand)]
        command: KtCommand,
    },
    /// Report a user's message to the server's administrators.
    ///
    /// Example: qpq report mallory --seq 12 --category spam --reason "ads every hour"
    Report {
        /// The reported user: username or 64 hex digits of an identity key.
        user: String,
        /// Sequence number of the message in your queue (from fetch or peek).
        #[arg(long, default_value_t = 0)]
        seq: u64,
        /// Channel the message was sent in (hex id).
        #[arg(long)]
        channel: Option<String>,
        /// spam, abuse, illegal or other.
        #[arg(long, default_value = "other")]
        category: String,
        /// Why, in a few words.
        #[arg(long, default_value = "")]
        reason: String,
        /// The decrypted message text you choose to disclose.
        #[arg(long)]
        evidence: Option<String>,
    },
    /// Server administration (for usernames the server lists with --admin).
    ///
    /// Example: qpq admin reports
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Upload MLS KeyPackage files made by your MLS client, and your signed hybrid
    /// X25519+ML-KEM-768 public key (generated into the profile on first use).
    ///
    /// Each file holds one TLS-encoded KeyPackage. Without files only the hybrid key is
    /// uploaded.
    ///
    /// Example: qpq keys upload kp1.bin kp2.bin
    Upload {
        /// KeyPackage files, one TLS-encoded KeyPackage each.
        files: Vec<PathBuf>,
        /// Upload the (single) file as your last-resort KeyPackage: handed out only when the
        /// others are used up, and never removed.
        #[arg(long)]
        last_resort: bool,
        /// Generate a new hybrid key instead of re-uploading the profile's.
        #[arg(long)]
        new_hybrid: bool,
    },
    /// Fetch a user's KeyPackage (this uses one of theirs up) and hybrid key, checking the
    /// hybrid key's signature against their identity key.
    ///
    /// Example: qpq keys fetch bob --key-package-out bob-kp.bin
    Fetch {
        /// Username or 64 hex digits of an identity key.
        user: String,
        /// Save the KeyPackage to this file (else it is printed as hex).
        #[arg(long)]
        key_package_out: Option<PathBuf>,
        /// Save the verified hybrid public key (x25519 ‖ ml-kem-768) to this file.
        #[arg(long)]
        hybrid_out: Option<PathBuf>,
        /// Fetch only the hybrid key, leaving their KeyPackages alone.
        #[arg(long)]
        hybrid_only: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ChannelCommand {
    /// Create a channel you own, optionally with members; prints its id (use it as the MLS
    /// group id).
    ///
    /// Example: qpq channel create team --member bob --member carol
    Create {
        /// Display name (visible to the server).
        name: String,
        /// A member to add at once (repeatable): username or identity key hex.
        #[arg(long = "member")]
        members: Vec<String>,
        /// Description (visible to the server).
        #[arg(long, default_value = "")]
        description: String,
        /// The MLS epoch your group is in now (0 for a new group).
        #[arg(long, default_value_t = 0)]
        epoch: u64,
    },
    /// Submit an MLS commit that adds USER, with the Welcome for them, both made by your MLS
    /// client (this tool keeps no MLS state of its own). The server accepts the commit only
    /// for the channel's current epoch, queues it for the other members and then queues the
    /// Welcome for USER, who becomes a member.
    ///
    /// Example: qpq channel add 5f0c…e1 bob --epoch 3 --commit commit.bin --welcome welcome.bin
    Add {
        /// Channel id (hex).
        channel: String,
        /// The added user: username or identity key hex.
        user: String,
        /// The epoch the commit was made in (the group's current epoch).
        #[arg(long)]
        epoch: u64,
        /// File with the TLS-encoded MLSMessage carrying the Commit.
        #[arg(long)]
        commit: PathBuf,
        /// File with the TLS-encoded MLSMessage carrying the Welcome for USER.
        #[arg(long)]
        welcome: PathBuf,
    },
    /// Remove a member from the server's record of the channel (or leave it, naming yourself).
    /// The MLS Remove commit is your MLS client's to send.
    ///
    /// Example: qpq channel remove 5f0c…e1 bob
    Remove {
        /// Channel id (hex).
        channel: String,
        /// Username or identity key hex.
        user: String,
    },
    /// List a channel's members with their roles.
    ///
    /// Example: qpq channel list 5f0c…e1
    List {
        /// Channel id (hex).
        channel: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum BlobCommand {
    /// Upload a file in chunks (with a progress bar for large files) and print its blob id,
    /// the SHA-256 of its content. Encrypt secret files before uploading.
    ///
    /// Example: qpq blob put holiday.jpg --mime image/jpeg
    Put {
        /// The file.
        file: PathBuf,
        /// Media type hint stored with the blob.
        #[arg(long, default_value = "")]
        mime: String,
        /// Chunk size in bytes (at most 4 MiB).
        #[arg(long, default_value_t = qpq_client::blob::DEFAULT_CHUNK)]
        chunk_size: usize,
    },
    /// Download a blob into a file, checking its SHA-256; continues a partial file.
    ///
    /// Example: qpq blob get 9f86d0…0a08 holiday.jpg
    Get {
        /// Blob id: 64 hex digits.
        id: String,
        /// Output file; when it holds the first part of the blob, the rest is appended.
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum DeviceCommand {
    /// Register this profile as a device of your account (a new device key is kept in the
    /// profile); this session and later logins are bound to it.
    ///
    /// Example: qpq device register "alice's laptop"
    Register {
        /// A name for the device.
        name: String,
    },
    /// List your account's devices.
    ///
    /// Example: qpq device list
    List,
    /// Revoke a device: its sessions end at once and its queue is dropped.
    ///
    /// Example: qpq device revoke 0f1e2d3c4b5a69788796a5b4c3d2e1f0
    Revoke {
        /// Device id (32 hex digits, from `qpq device list`).
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum RecoveryCommand {
    /// Encrypt a file (at most about 60 KiB) with a key derived from your password and store
    /// it on the server, replacing any earlier one. Asks for the password.
    ///
    /// Example: qpq recovery store backup-codes.txt
    Store {
        /// The file to keep.
        file: PathBuf,
    },
    /// Fetch your stored file and decrypt it into OUT (mode 0600). Asks for the password.
    ///
    /// Example: qpq recovery fetch restored.txt
    Fetch {
        /// Where to write it.
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum KtCommand {
    /// Verify a user's key binding against the server's transparency log: the signed tree
    /// head, the inclusion proof, and that the log extends the one seen last time. The log
    /// key is pinned in the profile on first use.
    ///
    /// Example: qpq kt audit bob
    Audit {
        /// The username [default: your own].
        user: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum AdminCommand {
    /// Ban a user server-wide (their sessions end and login fails) or, with --channel, from
    /// one channel.
    ///
    /// Example: qpq admin ban mallory --reason spam --duration 86400
    Ban {
        /// Username or identity key hex.
        user: String,
        /// Ban from this channel only (hex id).
        #[arg(long)]
        channel: Option<String>,
        /// Reason shown to administrators.
        #[arg(long, default_value = "")]
        reason: String,
        /// Length in seconds (0: permanent).
        #[arg(long, default_value_t = 0)]
        duration: u32,
    },
    /// Lift a ban.
    ///
    /// Example: qpq admin unban mallory
    Unban {
        /// Username or identity key hex.
        user: String,
        /// Lift the ban from this channel only (hex id).
        #[arg(long)]
        channel: Option<String>,
    },
    /// List reports, oldest first.
    ///
    /// Example: qpq admin reports --limit 20
    Reports {
        /// Most reports to show (0: the server's default page).
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
    /// List bans in force.
    ///
    /// Example: qpq admin bans
    Bans {
        /// Only this channel's bans (hex id).
        #[arg(long)]
        channel: Option<String>,
    },
    /// List accounts in username order, one page at a time: identity key, age, queued
    /// messages, devices, and whether online or banned. When more follow, the last line says
    /// how to get the next page (with --json: an object holding only `next_after`).
    ///
    /// Example: qpq admin users --limit 50 --after bob
    Users {
        /// Start after this username (exclusive; the previous page's last).
        #[arg(long, default_value = "")]
        after: String,
        /// Most accounts to show (0: the server's default page of 100; at most 1000).
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
    /// Show what the server stores: accounts, live sessions, queued messages, blobs,
    /// channels, transparency log size, federation outbox, disk use and journal sync times.
    ///
    /// Example: qpq admin stats
    Stats,
}

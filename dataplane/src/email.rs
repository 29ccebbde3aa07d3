//! The e-mail channel: one message per notification and user, over SMTP (lettre).
//! `notifications.email.smtp_url` is `smtp://host:port` (plain, or STARTTLS when the
//! server offers it), `smtps://host:port` (TLS) with optional `user:pass@`.

use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::notifications::Notification;

/// Longest accepted address.
pub const MAX_ADDRESS_LEN: usize = 254;

#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

/// A plausible address (what an `email` claim must look like to be kept).
pub fn valid_address(a: &str) -> bool {
    a.len() <= MAX_ADDRESS_LEN && a.parse::<lettre::Address>().is_ok()
}

impl Mailer {
    pub fn new(smtp_url: &str, from: &str) -> Result<Self, String> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp_url)
            .map_err(|e| format!("notifications.email.smtp_url: {e}"))?
            .build();
        let from = from
            .parse::<Mailbox>()
            .map_err(|e| format!("notifications.email.from: {from:?}: {e}"))?;
        Ok(Self { transport, from })
    }

    /// The message for one recipient.
    pub fn message(&self, n: &Notification, to: &str) -> Result<Message, String> {
        let to: Mailbox = to.parse().map_err(|e| format!("address {to:?}: {e}"))?;
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(n.title.clone())
            .header(lettre::message::header::ContentType::TEXT_PLAIN)
            .body(format!("{}\n\n-- \nnotification {}\n", n.body, n.id))
            .map_err(|e| format!("email: {e}"))
    }

    /// Send; `Err` says why (a permanent SMTP refusal or a connection failure).
    pub async fn send(&self, n: &Notification, to: &str) -> Result<(), String> {
        let m = self.message(n, to)?;
        self.transport
            .send(m)
            .await
            .map(|_| ())
            .map_err(|e| format!("smtp: {e}"))
    }
}

//! Mail the meta servers send: sign-up verification and password reset
//! links, over SMTP (lettre; STARTTLS or TLS with rustls, or plain SMTP to a
//! relay on loopback), configured by `smtp_url`, `mail_from` and
//! `public_url`.

use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// Why a mail could not be sent, or the settings are wrong.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("smtp_url {url:?}: {detail}")]
    Url { url: String, detail: String },
    #[error("mail_from {0:?} is not an address")]
    From(String),
    #[error("{0:?} is not an address")]
    To(String),
    #[error("building the mail: {0}")]
    Build(String),
    #[error("the SMTP server refused or could not be reached: {0}")]
    Send(String),
}

/// A mail sender.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// Where links point: the web gateway's address.
    public_url: String,
}

impl Mailer {
    /// A sender through `url` (smtp://host:port for a relay on loopback,
    /// smtp://host:587?tls=required for STARTTLS, smtps://user:pass@host for
    /// TLS), from `from`, with links under `public_url`.
    pub fn new(url: &str, from: &str, public_url: &str) -> Result<Mailer, MailError> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| MailError::Url {
                url: url.to_owned(),
                detail: e.to_string(),
            })?
            .build();
        let from = from.parse().map_err(|_| MailError::From(from.to_owned()))?;
        Ok(Mailer {
            transport,
            from,
            public_url: public_url.trim_end_matches('/').to_owned(),
        })
    }

    /// The link a person follows for `path` with `token`.
    pub fn link(&self, path: &str, token: &str) -> String {
        format!("{}/{path}?token={token}", self.public_url)
    }

    /// Sends a plain-text mail.
    pub async fn send(&self, to: &str, subject: &str, body: String) -> Result<(), MailError> {
        let to: Mailbox = to.parse().map_err(|_| MailError::To(to.to_owned()))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .body(body)
            .map_err(|e| MailError::Build(e.to_string()))?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| MailError::Send(e.to_string()))
    }
}

//! "Ask" as a conversation (migration 0014): each answered question is a turn of its
//! conversation, kept so a follow-up is answered with the earlier turns; a conversation
//! belongs to the API key that started it (`None`: the CLI's own).
use super::{Store, now_ms};
use crate::Result;
use crate::tx::Record;

/// One turn of a conversation.
#[derive(Clone, Debug, sqlx::FromRow, serde::Serialize)]
pub struct AskTurnRow {
    pub seq: i64,
    pub question: String,
    pub answer: String,
    pub ask_id: Option<String>,
    pub created_at: i64,
}

impl Record for AskTurnRow {
    fn from_lite(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self { seq: r.get(0)?, question: r.get(1)?, answer: r.get(2)?, ask_id: r.get(3)?, created_at: r.get(4)? })
    }
}

/// A conversation as listed: its first question is its title.
#[derive(Clone, Debug, sqlx::FromRow, serde::Serialize)]
pub struct AskConversationRow {
    pub id: String,
    pub project_id: Option<String>,
    pub title: String,
    pub turns: i64,
    pub updated_at: i64,
}

impl Record for AskConversationRow {
    fn from_lite(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self { id: r.get(0)?, project_id: r.get(1)?, title: r.get(2)?, turns: r.get(3)?, updated_at: r.get(4)? })
    }
}

/// The condition on a conversation's owner: `$2` is an API key's id, or NULL for the CLI's.
macro_rules! owned {
    () => {
        "((key_id = $2) OR (key_id IS NULL AND $2 IS NULL))"
    };
}

impl Store {
    /// Appends a turn to `conversation` (made by its first turn) and returns its number. A
    /// conversation of another owner or project is refused as not found (`Ok(None)`).
    pub async fn add_ask_turn(
        &self,
        conversation: &str,
        key_id: Option<&str>,
        project_id: Option<&str>,
        question: &str,
        answer: &str,
        ask_id: Option<&str>,
    ) -> Result<Option<i64>> {
        let mut tx = self.begin().await?;
        let turns = tx.int("SELECT COUNT(*) FROM ask_turns WHERE conversation = $1", &[conversation.into()]).await?;
        if turns > 0 {
            let mine = tx
                .int(
                    concat!(
                        "SELECT COUNT(*) FROM ask_turns WHERE conversation = $1 AND seq = 1 AND ",
                        owned!(),
                        " AND ((project_id = $3) OR (project_id IS NULL AND $3 IS NULL))"
                    ),
                    &[conversation.into(), key_id.into(), project_id.into()],
                )
                .await?;
            if mine == 0 {
                return Ok(None);
            }
        }
        let next = tx
            .int("SELECT COALESCE(MAX(seq), 0) + 1 FROM ask_turns WHERE conversation = $1", &[conversation.into()])
            .await?;
        tx.exec(
            "INSERT INTO ask_turns (conversation, seq, key_id, project_id, question, answer, ask_id, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                conversation.into(),
                next.into(),
                key_id.into(),
                project_id.into(),
                question.into(),
                answer.into(),
                ask_id.into(),
                now_ms().into(),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(Some(next))
    }

    /// The turns of a conversation `key_id` owns, in order; `None` when that owner has no such
    /// conversation.
    /// With `project_id`, only a conversation about that project.
    pub async fn ask_turns(
        &self,
        conversation: &str,
        key_id: Option<&str>,
        project_id: Option<&str>,
    ) -> Result<Option<Vec<AskTurnRow>>> {
        let turns: Vec<AskTurnRow> = self
            .fetch(
                concat!(
                    "SELECT seq, question, answer, ask_id, created_at FROM ask_turns WHERE conversation = $1 AND ",
                    owned!(),
                    " AND ($3 IS NULL OR conversation IN
                        (SELECT conversation FROM ask_turns WHERE seq = 1 AND project_id = $3)) ORDER BY seq"
                ),
                &[conversation.into(), key_id.into(), project_id.into()],
            )
            .await?;
        Ok(if turns.is_empty() { None } else { Some(turns) })
    }

    /// The conversations `key_id` owns, the most recent first (at most `limit`).
    pub async fn ask_conversations(&self, key_id: Option<&str>, limit: i64) -> Result<Vec<AskConversationRow>> {
        self.fetch(
            concat!(
                "SELECT f.conversation AS id, f.project_id AS project_id, f.question AS title,
                        (SELECT COUNT(*) FROM ask_turns c WHERE c.conversation = f.conversation) AS turns,
                        (SELECT MAX(c.created_at) FROM ask_turns c WHERE c.conversation = f.conversation) AS updated_at
                 FROM ask_turns f WHERE f.seq = 1 AND $1 > 0 AND ",
                owned!(),
                " ORDER BY updated_at DESC, id LIMIT $1"
            ),
            &[limit.into(), key_id.into()],
        )
        .await
    }

    /// Deletes a conversation `key_id` owns (its usage stays in `asks`); whether there was one.
    pub async fn delete_ask_conversation(&self, conversation: &str, key_id: Option<&str>) -> Result<bool> {
        let mut tx = self.begin().await?;
        let n = tx
            .exec(
                concat!("DELETE FROM ask_turns WHERE conversation = $1 AND ", owned!()),
                &[conversation.into(), key_id.into()],
            )
            .await?;
        tx.commit().await?;
        Ok(n > 0)
    }
}

-- Handover gates dispatch: a reference held in `human` names the chat it holds, so the host can
-- skip the bot's hooks for that chat (plugbox/storage/conversations.py).
ALTER TABLE conversation_handover ADD COLUMN session_id TEXT;
ALTER TABLE conversation_handover ADD COLUMN chat_id TEXT;

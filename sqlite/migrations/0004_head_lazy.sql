-- A listener's head is the larger of listeners.head and the seq of its
-- newest message: an append no longer rewrites the listener's row (which
-- cost a page of the write-ahead log per commit). listeners.head keeps the
-- head only where messages no longer show it: the store raises it before it
-- deletes a listener's messages.
DROP TRIGGER messages_head;

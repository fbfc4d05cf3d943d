-- Quotas (moitessier.Quota) count, in Join, a person's listeners, Handler
-- listeners and subscriptions: these indexes make each count a range scan
-- of that person's rows.

CREATE INDEX listeners_person ON listeners (person, type);

CREATE INDEX subscribers_person ON subscribers (person);

package clouddatastore

import (
	"errors"

	"cloud.google.com/go/datastore"

	"github.com/likestripes/moitessier"
)

// Kinds. Every key is in the store's namespace; the "Mt" prefix keeps the
// kinds apart from an application's own in a shared namespace.
const (
	kindMeta     = "MtMeta"     // one entity: the layout version and the pattern version
	kindListener = "MtListener" // one per listener, named by its ID
	kindSub      = "MtSub"      // one per subscriber, child of its listener
	kindGen      = "MtGen"      // never stored: the parent of one incarnation's messages
	kindMsg      = "MtMsg"      // one per message, child of its incarnation, ID = seq
	kindKey      = "MtKey"      // one per (sender, idempotency key)
	kindScope    = "MtScope"    // one per concrete scope some listener hears
	kindTomb     = "MtTomb"     // one per deleted incarnation, until its messages are gone
	kindPerson   = "MtPerson"   // one per person holding listeners or subscriptions: quota counts
)

// metaEnt is the namespace's one meta entity.
type metaEnt struct {
	Schema  int64 `datastore:",noindex"`
	Created int64 `datastore:",noindex"`
	// Patterns changes (to a new random value) in every transaction that
	// creates or deletes a listener with a wildcard pattern.
	Patterns int64 `datastore:",noindex"`
}

// listenerEnt is a listener: what it is, its head, and its subscriber count.
type listenerEnt struct {
	Type   int64  `datastore:",noindex"`
	Person string `datastore:",noindex"`
	Client string `datastore:",noindex"`
	// Scopes are indexed: Match finds a concrete scope by equality (a
	// dispatch scope never equals a pattern, which holds a wildcard token).
	Scopes []string
	// Wild is true for listeners with a pattern; the pattern cache loads them.
	Wild    bool
	Created int64 `datastore:",noindex"`
	// Inc names this incarnation: its messages are children of Gen(ID/Inc),
	// so a listener deleted and created again never sees the old messages.
	Inc  string `datastore:",noindex"`
	Head int64  `datastore:",noindex"`
	Subs int64  `datastore:",noindex"`
	// Touched is the store clock (Unix ns) of the last change of Head or of
	// the creation: Heads queries it to find what changed.
	Touched int64
}

func (l *listenerEnt) info(id string) moitessier.ListenerInfo {
	return moitessier.ListenerInfo{
		ID: id, Type: moitessier.ListenerType(l.Type), Person: l.Person, Client: l.Client,
		Scopes: append([]string(nil), l.Scopes...), Created: fromNS(l.Created), Head: moitessier.Cursor(l.Head),
	}
}

// subEnt is one subscriber.
type subEnt struct {
	Person string `datastore:",noindex"`
	Client string `datastore:",noindex"`
	Cursor int64  `datastore:",noindex"`
	Joined int64  `datastore:",noindex"`
	// Lease is indexed: Sweep finds expired subscribers by it.
	Lease int64
}

func (e *subEnt) sub() moitessier.Subscriber {
	return moitessier.Subscriber{Person: e.Person, Client: e.Client, Cursor: moitessier.Cursor(e.Cursor), Joined: fromNS(e.Joined), LeaseExpires: fromNS(e.Lease)}
}

// msgEnt is one message; its listener and seq are in its key.
type msgEnt struct {
	Dispatch string `datastore:",noindex"`
	Scope    string `datastore:",noindex"`
	Sender   string `datastore:",noindex"`
	Text     string `datastore:",noindex"`
	// Created is indexed: retention by age finds old messages by it.
	Created int64
}

// keyEnt records a dispatch made with an idempotency key: when, and the
// messages it wrote (incarnation and seq of each).
type keyEnt struct {
	At   int64
	Gens []string `datastore:",noindex"`
	Seqs []int64  `datastore:",noindex"`
	// FP is the request's fingerprint (moitessier.Batch.Fingerprint).
	FP []byte `datastore:",noindex"`
}

// personEnt counts what one person holds, for Quota: the listeners they
// own (ListenerInfo.Person), the Handler and Shared listeners among them,
// and their subscriptions. It changes in the transactions that create or
// delete those, and goes when all are zero. (Shared came later: an entity
// written before it loads with 0, and the count never goes below 0.)
type personEnt struct {
	Listeners int64 `datastore:",noindex"`
	Handlers  int64 `datastore:",noindex"`
	Shared    int64 `datastore:",noindex"`
	Subs      int64 `datastore:",noindex"`
}

// scopeEnt is the version of a concrete scope's listener set: it changes
// (to a new random value) in every transaction that creates or deletes a
// listener hearing the scope, and is deleted with the scope's last one.
type scopeEnt struct {
	Version int64 `datastore:",noindex"`
	Count   int64 `datastore:",noindex"`
}

// tombEnt records a deleted incarnation: its messages are deleted by Sweep,
// and Heads reports the listener gone.
type tombEnt struct {
	Listener string `datastore:",noindex"`
	Inc      string `datastore:",noindex"`
	At       int64
}

func (s *Store) key(kind, name string, parent *datastore.Key) *datastore.Key {
	k := datastore.NameKey(kind, name, parent)
	k.Namespace = s.ns
	return k
}

func (s *Store) metaKey() *datastore.Key { return s.key(kindMeta, "store", nil) }

func (s *Store) listenerKey(id string) *datastore.Key { return s.key(kindListener, "l"+id, nil) }

func listenerID(k *datastore.Key) string { return k.Name[1:] }

// subKey names a subscriber by person and client so that key order is
// (Person, Client) byte order: persons and clients hold no control
// character, so "\x01" sorts before any byte that follows a person that
// is a prefix of another.
func (s *Store) subKey(id, person, client string) *datastore.Key {
	return s.key(kindSub, "u"+person+"\x01"+client, s.listenerKey(id))
}

func (s *Store) personKey(person string) *datastore.Key { return s.key(kindPerson, "p"+person, nil) }

func genName(id, inc string) string { return id + "/" + inc }

func (s *Store) genKey(gen string) *datastore.Key { return s.key(kindGen, gen, nil) }

func (s *Store) msgKey(gen *datastore.Key, seq int64) *datastore.Key {
	k := datastore.IDKey(kindMsg, seq, gen)
	k.Namespace = s.ns
	return k
}

func (s *Store) idemKey(sender, key string) *datastore.Key {
	return s.key(kindKey, "k"+sender+"\x01"+key, nil)
}

func (s *Store) scopeKey(scope string) *datastore.Key { return s.key(kindScope, "v"+scope, nil) }

func (s *Store) tombKey(gen string) *datastore.Key { return s.key(kindTomb, "t"+gen, nil) }

// getInto calls get (a GetMulti of at most 1000 keys) and reports which
// keys exist.
func getInto(get func(keys []*datastore.Key, dst []any) error, keys []*datastore.Key, ents []any) ([]bool, error) {
	found := make([]bool, len(keys))
	err := get(keys, ents)
	var me datastore.MultiError
	switch {
	case err == nil:
		for i := range found {
			found[i] = true
		}
	case errors.As(err, &me):
		for i, e := range me {
			switch {
			case e == nil:
				found[i] = true
			case errors.Is(e, datastore.ErrNoSuchEntity):
			default:
				return nil, e
			}
		}
	default:
		return nil, err
	}
	return found, nil
}

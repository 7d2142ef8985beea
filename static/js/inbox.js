// The list of conversations with their unread counts, kept live from the socket.
// Every page has one (for the unread total in the title); the home page draws it.

import { api } from "./util.js";

const MAX_PAGES = 20;

export class Inbox extends EventTarget {
  constructor(me) {
    super();
    this.me = me;
    this.byPeer = new Map();
    this.loaded = false;
    // Set by the chat page: the peer on screen, and whether the user is reading now
    // (such messages are marked read at once and never counted).
    this.activePeer = null;
    this.isReading = () => false;
    this.listOnScreen = false; // the home page shows every conversation itself
  }

  async load() {
    // Messages that arrive while the list is on its way may or may not be in it:
    // they are applied again on top, and `countedUpTo` keeps them from counting twice.
    const arrived = [];
    this.arrivedDuringLoad = arrived;
    try {
      const conversations = [];
      let url = "/api/conversations/";
      for (let page = 0; url && page < MAX_PAGES; page += 1) {
        const data = await api(url);
        conversations.push(...data.results);
        url = data.next;
      }
      this.byPeer.clear();
      for (const conversation of conversations) this.put(conversation);
      this.loaded = true;
    } finally {
      if (this.arrivedDuringLoad === arrived) this.arrivedDuringLoad = null;
    }
    for (const message of arrived) this.applyMessage(message, { replay: true });
    this.changed();
  }

  put(conversation) {
    // Unread counts from the server already include everything up to this id.
    conversation.countedUpTo = conversation.last_message ? conversation.last_message.id : 0;
    conversation.peer_read_up_to = conversation.peer_read_up_to || 0;
    this.byPeer.set(conversation.peer.username, conversation);
  }

  get(peer) {
    return this.byPeer.get(peer) || null;
  }

  /** Most recent activity first, like GET /api/conversations/. */
  list() {
    return [...this.byPeer.values()].sort((a, b) => (b.last_message?.id ?? 0) - (a.last_message?.id ?? 0));
  }

  maxMessageId() {
    let max = 0;
    for (const conversation of this.byPeer.values()) max = Math.max(max, conversation.last_message?.id ?? 0);
    return max;
  }

  totalUnread() {
    let total = 0;
    for (const conversation of this.byPeer.values()) total += conversation.unread_count || 0;
    return total;
  }

  applyMessage(message, { replay = false } = {}) {
    if (!replay && this.arrivedDuringLoad) this.arrivedDuringLoad.push(message);
    const mine = message.sender === this.me;
    const peer = mine ? message.recipient : message.sender;
    let conversation = this.byPeer.get(peer);
    if (!conversation) {
      conversation = {
        peer: { username: peer, id: null, online: !mine, last_seen: null },
        last_message: null,
        unread_count: 0,
        peer_read_up_to: 0,
        countedUpTo: 0,
        incomplete: true,
      };
      this.byPeer.set(peer, conversation);
      this.dispatchEvent(new CustomEvent("unknown-peer", { detail: peer }));
    }
    if (!conversation.last_message || message.id > conversation.last_message.id) conversation.last_message = message;
    if (mine) {
      // Sending in a conversation reads it (the server moves the read marker too).
      conversation.unread_count = 0;
    } else if (message.id > conversation.countedUpTo) {
      if (!(this.activePeer === peer && this.isReading())) conversation.unread_count += 1;
    }
    if (replay) return;
    this.changed(peer);
  }

  markRead(peer) {
    const conversation = this.byPeer.get(peer);
    if (conversation && conversation.unread_count) {
      conversation.unread_count = 0;
      this.changed(peer);
    }
  }

  applyRead({ by, up_to: upTo }) {
    const conversation = this.byPeer.get(by);
    if (conversation && upTo > conversation.peer_read_up_to) {
      conversation.peer_read_up_to = upTo;
      this.changed(by);
    }
  }

  applyPresence({ user, online, last_seen: lastSeen }) {
    const conversation = this.byPeer.get(user);
    if (!conversation) return;
    conversation.peer.online = online;
    if (lastSeen !== undefined) conversation.peer.last_seen = lastSeen;
    this.changed(user);
  }

  changed(peer = null) {
    this.dispatchEvent(new CustomEvent("change", { detail: peer }));
  }
}

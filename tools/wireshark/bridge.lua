-- Wireshark dissector for the BLE head-unit bridge (docs/PROTOCOL.md).
--
-- Install: copy this file into Wireshark's personal plugins folder
--   Linux, macOS: ~/.local/lib/wireshark/plugins/
--   Windows:      %APPDATA%\Wireshark\plugins\
-- or load it once: wireshark -X lua_script:bridge.lua, tshark -X lua_script:bridge.lua
--
-- What it shows: the bridge's segments inside the ATT values of its characteristics
-- (writes to 6b1e0001-..., notifications of 6b1e0002-..., the head unit's direction taken
-- from whether the server has the identify characteristic 6b1e0004-...; Wireshark knows which handle
-- is which from the GATT discovery in the capture), records reassembled per direction
-- and lane, and the first fields of plaintext frames (channel, type, seq): the
-- handshake and anything before pairing. Encrypted records show their counter byte and,
-- with the key log of the session (preference "Key log file", the file
-- `bridge demo --keylog` or debug.keylog writes; tshark: -o bridge.keylog:FILE), are
-- decrypted and checked (ChaCha20-Poly1305, docs/PROTOCOL.md 8.4, here in Lua): their
-- frames then show as plaintext ones do, with bridge.record.decrypted set.
--
-- Filter fields: bridge.direction, bridge.segment.kind, bridge.segment.lane,
-- bridge.segment.seq, bridge.segment.length, bridge.segment.credit, bridge.record.length,
-- bridge.record.encrypted, bridge.record.counter, bridge.record.decrypted,
-- bridge.frame.channel, bridge.frame.type, bridge.frame.seq.

local bridge = Proto("bridge", "BLE head-unit bridge")

local KINDS = { [0] = "CONT", [1] = "FIRST", [2] = "CREDIT", [3] = "reserved" }
local CHANNELS = { [0] = "control", [1] = "navigation", [2] = "audio", [3] = "messaging", [4] = "bulk" }
local CONTROL = {
  [1] = "ack", [2] = "keepalive", [3] = "close", [4] = "handshake", [5] = "pairing",
  [6] = "hello", [7] = "error", [8] = "shortcuts", [9] = "launch", [10] = "launch_result",
}

local f = {
  direction = ProtoField.string("bridge.direction", "Direction"),
  kind = ProtoField.uint8("bridge.segment.kind", "Segment kind", base.DEC, KINDS, 0xC0),
  lane = ProtoField.uint8("bridge.segment.lane", "Lane", base.DEC, nil, 0x30),
  seq = ProtoField.uint8("bridge.segment.seq", "Segment seq", base.DEC, nil, 0x0F),
  length = ProtoField.uint16("bridge.segment.length", "Record length", base.DEC),
  credit = ProtoField.uint8("bridge.segment.credit", "Credit granted", base.DEC),
  data = ProtoField.bytes("bridge.segment.data", "Segment data"),
  record = ProtoField.bytes("bridge.record", "Record"),
  record_length = ProtoField.uint16("bridge.record.length", "Record length", base.DEC),
  encrypted = ProtoField.bool("bridge.record.encrypted", "Encrypted"),
  counter = ProtoField.uint8("bridge.record.counter", "Record counter (low byte)", base.DEC),
  decrypted = ProtoField.bool("bridge.record.decrypted", "Decrypted with the key log"),
  plain = ProtoField.bytes("bridge.record.plaintext", "Decrypted frame"),
  channel = ProtoField.uint8("bridge.frame.channel", "Channel", base.DEC, CHANNELS),
  type = ProtoField.uint16("bridge.frame.type", "Type", base.DEC),
  fseq = ProtoField.uint32("bridge.frame.seq", "Frame seq", base.DEC),
}
bridge.fields = f
bridge.prefs.keylog = Pref.string(
  "Key log file", "", "BRIDGE_V0 lines (bridge demo --keylog, debug.keylog): decrypts records"
)

-- written by the GATT client, notified by the GATT server (the phone or, in v1, the head
-- unit: a server that has the identify characteristic)
local TO_SERVER = "6b1e00015b5f4c2d9a2e6a3f0b6c1d00"
local FROM_SERVER = "6b1e00025b5f4c2d9a2e6a3f0b6c1d00"
local IDENTIFY = "6b1e00045b5f4c2d9a2e6a3f0b6c1d00"
local head_unit_serves = {}  -- connection -> true
local att_uuid = Field.new("btatt.uuid128")
local att_opcode = Field.new("btatt.opcode")
local acl_handle = Field.new("bthci_acl.chandle")
local adapter = Field.new("hci_mon.adapter_id")
local evt_code = Field.new("bthci_evt.code")
local evt_connection = Field.new("bthci_evt.connection_handle")
-- Wireshark files GATT handles per adapter, not per connection: once a second server's
-- discovery (an iPhone's ANCS, seen from the head unit) reuses a handle number, the first
-- connection's values lose their UUID. So the bridge's handles are learned per connection
-- while Wireshark still knows them, and forgotten when that connection ends.
local learned = {}    -- connection .. "#" .. ATT handle -> TO_SERVER or FROM_SERVER
local direction_of = {}  -- frame number -> direction (first pass), for later passes

-- reassembly state (first pass) and its results (every pass)
local lanes = {}      -- stream key .. lane -> { total = n, data = ByteArray }
local encrypted = {}  -- stream key -> true once a record was not a plaintext frame
local sessions = {}   -- stream key -> the session whose key opened its records, or false
local done = {}       -- frame number -> { record = ByteArray, encrypted = bool, plain = ByteArray }
local keylog = {}     -- { to_phone = {32 bytes}, to_head_unit = {32 bytes} } per logged session

-- ChaCha20-Poly1305 (RFC 8439) on 32-bit words with Wireshark's bit module ------------

local TWO32 = 4294967296
local function u32(x) return x % TWO32 end
local function rotl(x, n) return u32(bit.rol(x, n)) end
local function bxor(a, b) return u32(bit.bxor(a, b)) end

local function words(bytes, from, count)  -- little-endian 32-bit words of a byte table
  local out = {}
  for i = 0, count - 1 do
    local at = from + 4 * i
    out[i + 1] = bytes[at] + bytes[at + 1] * 256 + bytes[at + 2] * 65536 + bytes[at + 3] * 16777216
  end
  return out
end

local function quarter(x, a, b, c, d)
  x[a] = u32(x[a] + x[b]); x[d] = rotl(bxor(x[d], x[a]), 16)
  x[c] = u32(x[c] + x[d]); x[b] = rotl(bxor(x[b], x[c]), 12)
  x[a] = u32(x[a] + x[b]); x[d] = rotl(bxor(x[d], x[a]), 8)
  x[c] = u32(x[c] + x[d]); x[b] = rotl(bxor(x[b], x[c]), 7)
end

-- 64 bytes of key stream (a 0-based byte table): key (32 bytes), block counter, nonce (12)
local function chacha_block(key, counter, nonce)
  local state = { 0x61707865, 0x3320646e, 0x79622d32, 0x6b206574 }
  for _, w in ipairs(words(key, 0, 8)) do state[#state + 1] = w end
  state[13] = counter
  for _, w in ipairs(words(nonce, 0, 3)) do state[#state + 1] = w end
  local x = {}
  for i = 1, 16 do x[i] = state[i] end
  for _ = 1, 10 do
    quarter(x, 1, 5, 9, 13); quarter(x, 2, 6, 10, 14); quarter(x, 3, 7, 11, 15); quarter(x, 4, 8, 12, 16)
    quarter(x, 1, 6, 11, 16); quarter(x, 2, 7, 12, 13); quarter(x, 3, 8, 9, 14); quarter(x, 4, 5, 10, 15)
  end
  local out = {}
  for i = 1, 16 do
    local w = u32(x[i] + state[i])
    for j = 0, 3 do
      out[(i - 1) * 4 + j] = w % 256
      w = math.floor(w / 256)
    end
  end
  return out
end

-- Poly1305 in ten 13-bit limbs (every product and sum stays exact in a double)
local LIMB = 8192
local function limbs(bytes, from, length, top)  -- a little-endian number as 10 limbs
  local out = {}
  for k = 0, 9 do
    local value = 0
    for b = 12, 0, -1 do
      local pos = 13 * k + b
      local byte = math.floor(pos / 8)
      local bitv = 0
      if byte < length then bitv = math.floor(bytes[from + byte] / 2 ^ (pos % 8)) % 2 end
      value = value * 2 + bitv
    end
    out[k] = value
  end
  if top then out[9] = out[9] + 2048 end  -- the 2^128 of a whole block
  return out
end

local function poly1305(key, msg, n)  -- key: 0-based table (32), msg: 0-based table of n bytes
  local clamped = {}
  for i = 0, 15 do clamped[i] = key[i] end
  for _, i in ipairs({ 3, 7, 11, 15 }) do clamped[i] = clamped[i] % 16 end
  for _, i in ipairs({ 4, 8, 12 }) do clamped[i] = clamped[i] - clamped[i] % 4 end
  local r = limbs(clamped, 0, 16, false)
  local h = {}
  for i = 0, 9 do h[i] = 0 end
  for at = 0, n - 1, 16 do  -- callers pad the message to whole blocks
    local m = limbs(msg, at, 16, true)
    for i = 0, 9 do h[i] = h[i] + m[i] end
    local p = {}
    for i = 0, 9 do
      local sum = 0
      for j = 0, 9 do
        local k = i - j
        if k >= 0 then sum = sum + h[j] * r[k] else sum = sum + 5 * h[j] * r[k + 10] end
      end
      p[i] = sum
    end
    local carry = 0
    for i = 0, 9 do
      local v = p[i] + carry
      h[i] = v % LIMB
      carry = math.floor(v / LIMB)
    end
    while carry > 0 do  -- 2^130 = 5 (mod p)
      local v = h[0] + carry * 5
      h[0] = v % LIMB
      carry = math.floor(v / LIMB)
      for i = 1, 9 do
        if carry == 0 then break end
        v = h[i] + carry
        h[i] = v % LIMB
        carry = math.floor(v / LIMB)
      end
    end
  end
  -- h < 2^130; subtract p = 2^130 - 5 if h >= p
  local g, carry = {}, 5
  for i = 0, 9 do
    local v = h[i] + carry
    g[i] = v % LIMB
    carry = math.floor(v / LIMB)
  end
  if carry > 0 then h = g end
  local tag, acc, bits, t = {}, 0, 0, 0
  local s = words(key, 16, 4)
  -- h as 128 bits (little-endian bytes), then + s mod 2^128
  local hb = {}
  for i = 0, 9 do
    acc = acc + h[i] * 2 ^ bits
    bits = bits + 13
    while bits >= 8 and t < 16 do
      hb[t] = acc % 256
      acc = math.floor(acc / 256)
      bits = bits - 8
      t = t + 1
    end
  end
  while t < 16 do hb[t] = acc % 256; acc = math.floor(acc / 256); t = t + 1 end
  local c = 0
  for i = 0, 15 do
    local sb = math.floor(s[math.floor(i / 4) + 1] / 256 ^ (i % 4)) % 256
    local v = hb[i] + sb + c
    tag[i] = v % 256
    c = math.floor(v / 256)
  end
  return tag
end

local function nonce_for(counter)  -- 4 zero bytes, then the counter, 8 bytes little-endian
  local nonce = { [0] = 0, 0, 0, 0 }
  for i = 4, 11 do
    nonce[i] = counter % 256
    counter = math.floor(counter / 256)
  end
  return nonce
end

-- AEAD open: associated data, ciphertext and tag as 0-based tables (so their lengths are
-- given: # does not count index 0); the plaintext table, or nil
local function aead_open(key, counter, ad, ad_len, ct, ct_len, tag)
  local nonce = nonce_for(counter)
  local poly_key = chacha_block(key, 0, nonce)
  local msg, n = {}, 0
  local function put(b) msg[n] = b; n = n + 1 end
  for i = 0, ad_len - 1 do put(ad[i]) end
  while n % 16 ~= 0 do put(0) end
  for i = 0, ct_len - 1 do put(ct[i]) end
  while n % 16 ~= 0 do put(0) end
  local lengths = { ad_len, ct_len }
  for _, len in ipairs(lengths) do
    for _ = 1, 8 do put(len % 256); len = math.floor(len / 256) end
  end
  local want = poly1305(poly_key, msg, n)
  for i = 0, 15 do
    if want[i] ~= tag[i] then return nil end
  end
  local plain = {}
  for block = 0, math.floor((ct_len - 1) / 64) do
    local stream = chacha_block(key, block + 1, nonce)
    for i = 0, 63 do
      local at = block * 64 + i
      if at >= ct_len then break end
      plain[at] = bxor(ct[at], stream[i])
    end
  end
  return plain
end

local MAX_NONCE = nonce_for(0)
for i = 4, 11 do MAX_NONCE[i] = 255 end

local function rekey(key)  -- Noise's Rekey(): the first 32 bytes of ENCRYPT(k, 2^64-1, "", zeros)
  local stream = chacha_block(key, 1, MAX_NONCE)
  local new = {}
  for i = 0, 31 do new[i] = stream[i] end
  return new
end

-- One direction of one logged session: the counter and the key of each epoch
local function new_session(key)
  return { keys = { [0] = key }, highest = -1 }
end

local function session_open(session, record)  -- record: ByteArray; plaintext ByteArray or nil
  local length = record:len()
  if length < 18 then return nil end
  local lo = record:get_index(0)
  local expected = session.highest + 1
  local counter = expected - expected % 256 + lo
  if counter < expected - 128 then
    counter = counter + 256
  elseif counter > expected + 127 and counter >= 256 then
    counter = counter - 256
  end
  local epoch = math.floor(counter / 65536)
  if epoch > 1024 then return nil end
  for e = 1, epoch do
    if session.keys[e] == nil then session.keys[e] = rekey(session.keys[e - 1]) end
  end
  local ct, tag = {}, {}
  for i = 1, length - 17 do ct[i - 1] = record:get_index(i) end
  for i = 0, 15 do tag[i] = record:get_index(length - 16 + i) end
  local plain = aead_open(session.keys[epoch], counter, { [0] = lo }, 1, ct, length - 17, tag)
  if plain == nil then return nil end
  if counter > session.highest then session.highest = counter end
  local out = ByteArray.new()
  out:set_size(length - 17)
  for i = 0, length - 18 do out:set_index(i, plain[i]) end
  return out
end

local function find_session(record, direction)
  for _, logged in ipairs(keylog) do
    local key = direction == "to phone" and logged.to_phone or logged.to_head_unit
    local session = new_session(key)
    local plain = session_open(session, record)
    if plain ~= nil then return session, plain end
  end
  return false, nil
end

local function hex_bytes(text)
  local out = {}
  for i = 0, 31 do out[i] = tonumber(text:sub(2 * i + 1, 2 * i + 2), 16) end
  return out
end

local function read_keylog(path)
  local out = {}
  if path == nil or path == "" then return out end
  local file = io.open(path, "r")
  if file == nil then return out end
  for line in file:lines() do
    local h, a, b = line:match("^BRIDGE_V0%s+(%x+)%s+(%x+)%s+(%x+)%s*$")
    if h ~= nil and #a == 64 and #b == 64 then
      out[#out + 1] = { to_phone = hex_bytes(a), to_head_unit = hex_bytes(b) }
    end
  end
  file:close()
  return out
end

function bridge.init()
  lanes, encrypted, sessions, done, head_unit_serves = {}, {}, {}, {}, {}
  keylog = read_keylog(bridge.prefs.keylog)
end

function bridge.prefs_changed()
  keylog = read_keylog(bridge.prefs.keylog)
end

-- A CBOR unsigned integer at offset (major type 0, up to 4-byte arguments): value, next
local function cbor_uint(bytes, offset)
  if offset >= bytes:len() then return nil end
  local head = bytes:get_index(offset)
  if head > 0x1a then return nil end
  if head < 24 then return head, offset + 1 end
  local size = ({ [24] = 1, [25] = 2, [26] = 4 })[head]
  if offset + size >= bytes:len() then return nil end
  local value = 0
  for i = 1, size do value = value * 256 + bytes:get_index(offset + i) end
  return value, offset + 1 + size
end

-- [channel, type, seq|null, {…}(, acks)]: channel, type, seq (nil if null), or nil
local function plaintext_frame(bytes)
  if bytes:len() < 5 then return nil end
  local head = bytes:get_index(0)
  if head ~= 0x84 and head ~= 0x85 then return nil end
  local channel, at = cbor_uint(bytes, 1)
  if channel == nil or channel > 4 then return nil end
  local ftype
  ftype, at = cbor_uint(bytes, at)
  if ftype == nil or ftype > 255 then return nil end
  local seq
  if bytes:get_index(at) == 0xf6 then
    at = at + 1
  else
    seq, at = cbor_uint(bytes, at)
    if seq == nil then return nil end
  end
  if at >= bytes:len() then return nil end
  local body = bytes:get_index(at)
  if body < 0xa0 or body > 0xbb then return nil end
  return channel, ftype, seq
end

function bridge.dissector(tvb, pinfo, tree)
  local opcode = att_opcode()
  local handle, index = acl_handle(), adapter()
  local connection = (index and tostring(index.value) or "0") .. "/"
    .. (handle and tostring(handle.value) or "?")
  for _, uuid in ipairs({ att_uuid() }) do
    -- a server with the identify characteristic is a head unit (v1: the phone connected)
    if string.lower(tostring(uuid.value)) == IDENTIFY then
      head_unit_serves[connection] = true
    end
  end
  local code = evt_code()
  if code ~= nil and code.value == 0x05 and not pinfo.visited then  -- Disconnection Complete
    local ended = evt_connection()
    if ended ~= nil then
      local prefix = (index and tostring(index.value) or "0") .. "/" .. tostring(ended.value) .. "#"
      for key in pairs(learned) do
        if string.sub(key, 1, #prefix) == prefix then learned[key] = nil end
      end
      head_unit_serves[(index and tostring(index.value) or "0") .. "/" .. tostring(ended.value)] = nil
    end
  end
  if opcode == nil then return end
  local op = opcode.value
  local direction
  if pinfo.visited then
    direction = direction_of[pinfo.number]
  else
    local flip = head_unit_serves[connection]
    -- the handle as the PDU carries it (Wireshark's btatt.handle may list a decoded
    -- value's handles too)
    local pdu = opcode.source
    local at = opcode.offset + 1
    local att = (pdu ~= nil and at + 2 <= pdu:len()) and pdu:range(at, 2):le_uint() or -1
    local key = connection .. "#" .. tostring(att)
    local role
    for _, uuid in ipairs({ att_uuid() }) do  -- the service's and the characteristic's
      local id = string.lower(tostring(uuid.value))
      if id == TO_SERVER or id == FROM_SERVER then role = id end
    end
    if role ~= nil then learned[key] = role else role = learned[key] end
    if role == TO_SERVER and (op == 0x52 or op == 0x12) then
      direction = flip and "to head unit" or "to phone"
    elseif role == FROM_SERVER and op == 0x1b then
      direction = flip and "to phone" or "to head unit"
    end
    direction_of[pinfo.number] = direction
  end
  if direction == nil then return end
  -- the value is what follows the opcode and the handle in the (reassembled) ATT PDU:
  -- taken from there, not from btatt.value, which Wireshark leaves out when it decodes a
  -- value by a wrong handle mapping (see learned above)
  local pdu = opcode.source  -- the (reassembled) buffer the ATT PDU was read from
  local start = opcode.offset + 3
  if pdu == nil or start >= pdu:len() then return end
  local range = pdu:range(start)
  if range:len() < 1 then return end
  local subtree = tree:add(bridge, range, "BLE head-unit bridge, " .. direction)
  subtree:add(f.direction, direction):set_generated()
  local header = range:range(0, 1)
  local kind = bit.rshift(header:uint(), 6)
  local lane = bit.band(bit.rshift(header:uint(), 4), 3)
  subtree:add(f.kind, header)
  subtree:add(f.lane, header)
  subtree:add(f.seq, header)
  local info = "Bridge " .. direction .. ": " .. KINDS[kind] .. " lane " .. lane
  local data_offset = 1
  -- one segment stream per adapter, connection and direction
  local stream = connection .. ":" .. direction
  if kind == 2 then
    if range:len() >= 2 then
      subtree:add(f.credit, range:range(1, 1))
      info = info .. ", " .. range:range(1, 1):uint() .. " credits"
    end
    pinfo.cols.info:set(info)
    return
  end
  if kind == 1 then
    if range:len() < 3 then return end
    local total = bit.band(range:range(1, 2):le_uint(), 0x7fff)
    subtree:add_le(f.length, range:range(1, 2), total)
    data_offset = 3
    if bit.band(range:range(2, 1):uint(), 0x80) ~= 0 and range:len() >= 4 then
      subtree:add(f.credit, range:range(3, 1))
      data_offset = 4
    end
    if not pinfo.visited then
      lanes[stream .. lane] = { total = total, data = ByteArray.new() }
    end
  end
  if range:len() > data_offset then
    local data = range:range(data_offset)
    subtree:add(f.data, data)
    local pending = lanes[stream .. lane]
    if not pinfo.visited and pending ~= nil and kind ~= 3 then
      pending.data:append(data:bytes())
      if pending.data:len() >= pending.total then
        lanes[stream .. lane] = nil
        local record = pending.data
        local channel, ftype, seq = plaintext_frame(record)
        if channel == 0 and ftype == 4 and seq == nil then
          encrypted[stream] = nil  -- a handshake: a new link on this handle, in the clear
          sessions[stream] = nil
        elseif channel == nil then
          encrypted[stream] = true  -- the first record that is no plaintext frame
        end
        local entry = { record = record, encrypted = encrypted[stream] == true }
        if entry.encrypted and #keylog > 0 then
          local session = sessions[stream]
          if session == nil then
            session, entry.plain = find_session(record, direction)
            sessions[stream] = session
          elseif session then
            entry.plain = session_open(session, record)
          end
        end
        done[pinfo.number] = entry
      end
    end
  end
  local complete = done[pinfo.number]
  if complete ~= nil then
    local record = complete.record
    local rtvb = record:tvb("Bridge record")
    local rtree = subtree:add(f.record, rtvb())
    rtree:add(f.record_length, record:len()):set_generated()
    rtree:add(f.encrypted, complete.encrypted):set_generated()
    local frame = record
    if complete.encrypted then
      rtree:add(f.counter, rtvb(0, 1))
      rtree:add(f.decrypted, complete.plain ~= nil):set_generated()
      info = info .. ", encrypted record " .. record:get_index(0) .. " (" .. record:len() .. " bytes)"
      frame = complete.plain
      if frame ~= nil then
        local ptvb = frame:tvb("Decrypted frame")
        rtree:add(f.plain, ptvb())
        info = info .. ", decrypted"
      end
    end
    if frame ~= nil and plaintext_frame(frame) ~= nil then
      local channel, ftype, seq = plaintext_frame(frame)
      rtree:add(f.channel, channel):set_generated()
      rtree:add(f.type, ftype):set_generated()
      if seq ~= nil then rtree:add(f.fseq, seq):set_generated() end
      local name = tostring(ftype)
      if channel == 0 and CONTROL[ftype] ~= nil then name = CONTROL[ftype] end
      info = info .. ", " .. CHANNELS[channel] .. " " .. name
    end
  end
  pinfo.cols.protocol:set("BRIDGE")
  pinfo.cols.info:set(info)
end

register_postdissector(bridge, true)

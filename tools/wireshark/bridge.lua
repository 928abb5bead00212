-- Wireshark dissector for the BLE head-unit bridge (docs/PROTOCOL.md).
--
-- Install: copy this file into Wireshark's personal plugins folder
--   Linux, macOS: ~/.local/lib/wireshark/plugins/
--   Windows:      %APPDATA%\Wireshark\plugins\
-- or load it once: wireshark -X lua_script:bridge.lua, tshark -X lua_script:bridge.lua
--
-- What it shows: the bridge's segments inside the ATT values of its characteristics
-- (writes to 6b1e0001-..., notifications of 6b1e0002-...; Wireshark knows which handle
-- is which from the GATT discovery in the capture), records reassembled per direction
-- and lane, and the first fields of plaintext frames (channel, type, seq): the
-- handshake and anything before pairing. Encrypted records show their counter byte;
-- bridge-dump --keylog decrypts them.
--
-- Filter fields: bridge.direction, bridge.segment.kind, bridge.segment.lane,
-- bridge.segment.seq, bridge.segment.length, bridge.segment.credit, bridge.record.length,
-- bridge.record.encrypted, bridge.record.counter, bridge.frame.channel,
-- bridge.frame.type, bridge.frame.seq.

local bridge = Proto("bridge", "BLE head-unit bridge")

local KINDS = { [0] = "CONT", [1] = "FIRST", [2] = "CREDIT", [3] = "reserved" }
local CHANNELS = { [0] = "control", [1] = "navigation", [2] = "audio", [3] = "messaging", [4] = "bulk" }
local CONTROL = {
  [1] = "ack", [2] = "keepalive", [3] = "close", [4] = "handshake", [5] = "pairing",
  [6] = "hello", [7] = "error",
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
  channel = ProtoField.uint8("bridge.frame.channel", "Channel", base.DEC, CHANNELS),
  type = ProtoField.uint16("bridge.frame.type", "Type", base.DEC),
  fseq = ProtoField.uint32("bridge.frame.seq", "Frame seq", base.DEC),
}
bridge.fields = f

local TO_PHONE = "6b1e00015b5f4c2d9a2e6a3f0b6c1d00"
local FROM_PHONE = "6b1e00025b5f4c2d9a2e6a3f0b6c1d00"
local att_uuid = Field.new("btatt.uuid128")
local att_opcode = Field.new("btatt.opcode")
local att_value = Field.new("btatt.value")
local acl_handle = Field.new("bthci_acl.chandle")
local adapter = Field.new("hci_mon.adapter_id")

-- reassembly state (first pass) and its results (every pass)
local lanes = {}      -- stream key .. lane -> { total = n, data = ByteArray }
local encrypted = {}  -- stream key -> true once a record was not a plaintext frame
local done = {}       -- frame number -> { record = ByteArray, encrypted = bool }

function bridge.init()
  lanes, encrypted, done = {}, {}, {}
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
  local value = att_value()
  if opcode == nil or value == nil then return end
  local op = opcode.value
  local direction
  for _, uuid in ipairs({ att_uuid() }) do  -- the service's and the characteristic's
    local id = string.lower(tostring(uuid.value))
    if id == TO_PHONE and (op == 0x52 or op == 0x12) then
      direction = "to phone"
    elseif id == FROM_PHONE and op == 0x1b then
      direction = "to head unit"
    end
  end
  if direction == nil then return end
  local range = value.range
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
  local handle, index = acl_handle(), adapter()
  local stream = (index and tostring(index.value) or "0") .. "/"
    .. (handle and tostring(handle.value) or "?") .. ":" .. direction
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
        elseif channel == nil then
          encrypted[stream] = true  -- the first record that is no plaintext frame
        end
        done[pinfo.number] = { record = record, encrypted = encrypted[stream] == true }
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
    if complete.encrypted then
      rtree:add(f.counter, rtvb(0, 1))
      info = info .. ", encrypted record " .. record:get_index(0) .. " (" .. record:len() .. " bytes)"
    else
      local channel, ftype, seq = plaintext_frame(record)
      rtree:add(f.channel, channel):set_generated()
      rtree:add(f.type, ftype):set_generated()
      if seq ~= nil then rtree:add(f.fseq, seq):set_generated() end
      local name = tostring(ftype)
      if channel == 0 and seq == nil and CONTROL[ftype] ~= nil then name = CONTROL[ftype] end
      info = info .. ", " .. CHANNELS[channel] .. " " .. name
    end
  end
  pinfo.cols.protocol:set("BRIDGE")
  pinfo.cols.info:set(info)
end

register_postdissector(bridge, true)

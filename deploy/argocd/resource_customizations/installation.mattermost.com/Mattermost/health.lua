-- Argo CD health check for installation.mattermost.com/Mattermost (mattermost-operator).
-- Reads the kstatus conditions the operator writes (Stalled, Reconciling, Ready) and falls back to
-- status.state ("reconciling" | "ready" | "stable") for objects written by older operators.
local hs = {}

local function condition(status, type)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and observed ~= nil and observed < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end

local stalled = condition(obj.status, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = stalled.reason .. ": " .. (stalled.message or "")
  return hs
end

local reconciling = condition(obj.status, "Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = reconciling.reason .. ": " .. (reconciling.message or "")
  return hs
end

local ready = condition(obj.status, "Ready")
if ready ~= nil then
  if ready.status == "True" then
    hs.status = "Healthy"
    hs.message = ready.message or ""
  else
    hs.status = "Progressing"
    hs.message = ready.reason .. ": " .. (ready.message or "")
  end
  return hs
end

if obj.status.state == "stable" then
  hs.status = "Healthy"
  hs.message = "Mattermost is stable"
  return hs
end
hs.status = "Progressing"
hs.message = "Mattermost is " .. (obj.status.state or "reconciling")
return hs

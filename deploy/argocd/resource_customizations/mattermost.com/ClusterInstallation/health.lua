-- Argo CD health check for mattermost.com/ClusterInstallation (legacy v1alpha1), as written by
-- mattermost-operator (Rust) and the Go Mattermost Operator. A ClusterInstallation that migrates to
-- a Mattermost reads Progressing until it is deleted at the end of the migration.
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

if obj.status.migration ~= nil and obj.status.migration.status == "Refused" then
  hs.status = "Degraded"
  hs.message = "Migration refused: " .. (obj.status.migration.error or "")
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

if obj.status.state == "stable" then
  hs.status = "Healthy"
  hs.message = "ClusterInstallation is stable"
  return hs
end
hs.status = "Progressing"
hs.message = "ClusterInstallation is " .. (obj.status.state or "reconciling")
return hs

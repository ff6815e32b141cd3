// Code generated from Apple's device-management schema (mdm/commands/*.yaml); DO NOT EDIT.
// Regenerate when the schema changes; TestRequestTypesMatchSchema keeps this table honest.

package mdm

// requestTypes lists every command RequestType in Apple's schema and whether
// any OS allows it on the user channel.
var requestTypes = map[string]requestTypeInfo{
	"AccountConfiguration":            {userChannel: false}, // account.configuration.yaml
	"ActivationLockBypassCode":        {userChannel: false}, // device.activationlock.bypasscode.yaml
	"ActiveNSExtensions":              {userChannel: true},  // application.extensions.listactive.yaml
	"ApplyRedemptionCode":             {userChannel: false}, // application.redemptioncode.yaml
	"AvailableOSUpdates":              {userChannel: false}, // system.update.available.yaml
	"CertificateList":                 {userChannel: true},  // certificate.list.yaml
	"ClearActivationLockBypassCode":   {userChannel: false}, // device.activationlock.clearbypasscode.yaml
	"ClearPasscode":                   {userChannel: false}, // passcode.clear.yaml
	"ClearRestrictionsPassword":       {userChannel: false}, // device.restrictions.clearpassword.yaml
	"ContentCachingInformation":       {userChannel: false}, // information.contentcaching.yaml
	"DeclarativeManagement":           {userChannel: true},  // declarativemanagement.yaml
	"DeleteUser":                      {userChannel: false}, // user.delete.yaml
	"DeviceConfigured":                {userChannel: false}, // device.configured.yaml
	"DeviceInformation":               {userChannel: true},  // information.device.yaml
	"DeviceLocation":                  {userChannel: false}, // device.lostmode.location.yaml
	"DeviceLock":                      {userChannel: false}, // device.lock.yaml
	"DisableLostMode":                 {userChannel: false}, // device.lostmode.disable.yaml
	"DisableRemoteDesktop":            {userChannel: false}, // remotedesktop.disable.yaml
	"EnableLostMode":                  {userChannel: false}, // device.lostmode.enable.yaml
	"EnableRemoteDesktop":             {userChannel: false}, // remotedesktop.enable.yaml
	"EraseDevice":                     {userChannel: false}, // device.erase.yaml
	"InstallApplication":              {userChannel: true},  // application.install.yaml
	"InstallEnterpriseApplication":    {userChannel: false}, // application.install.enterprise.yaml
	"InstallMedia":                    {userChannel: true},  // media.install.yaml
	"InstallProfile":                  {userChannel: true},  // profile.install.yaml
	"InstallProvisioningProfile":      {userChannel: false}, // profile.provisioning.install.yaml
	"InstalledApplicationList":        {userChannel: true},  // application.installed.list.yaml
	"InviteToProgram":                 {userChannel: true},  // application.invitetoprogram.yaml
	"LOMDeviceRequest":                {userChannel: false}, // lom.devicerequest.yaml
	"LOMSetupRequest":                 {userChannel: false}, // lom.setuprequest.yaml
	"LogOutUser":                      {userChannel: false}, // user.logout.yaml
	"ManagedApplicationAttributes":    {userChannel: false}, // managed.application.attributes.yaml
	"ManagedApplicationConfiguration": {userChannel: false}, // managed.application.configuration.yaml
	"ManagedApplicationFeedback":      {userChannel: true},  // managed.application.feedback.yaml
	"ManagedApplicationList":          {userChannel: true},  // application.managed.list.yaml
	"ManagedMediaList":                {userChannel: false}, // media.managed.list.yaml
	"NSExtensionMappings":             {userChannel: true},  // application.extensions.mappings.yaml
	"OSUpdateStatus":                  {userChannel: false}, // system.update.status.yaml
	"PlayLostModeSound":               {userChannel: false}, // device.lostmode.playsound.yaml
	"ProfileList":                     {userChannel: true},  // profile.list.yaml
	"ProvisioningProfileList":         {userChannel: false}, // profile.provisioning.list.yaml
	"RefreshCellularPlans":            {userChannel: false}, // device.esim.yaml
	"RemoveApplication":               {userChannel: false}, // application.remove.yaml
	"RemoveMedia":                     {userChannel: false}, // media.remove.yaml
	"RemoveProfile":                   {userChannel: true},  // profile.remove.yaml
	"RemoveProvisioningProfile":       {userChannel: false}, // profile.provisioning.remove.yaml
	"RequestMirroring":                {userChannel: false}, // mirroring.request.yaml
	"RequestUnlockToken":              {userChannel: false}, // passcode.unlocktoken.yaml
	"RestartDevice":                   {userChannel: false}, // device.restart.yaml
	"Restrictions":                    {userChannel: true},  // device.restrictions.list.yaml
	"RotateFileVaultKey":              {userChannel: false}, // rotate.file.vault.key.yaml
	"ScheduleOSUpdate":                {userChannel: false}, // system.update.schedule.yaml
	"ScheduleOSUpdateScan":            {userChannel: false}, // system.update.scan.yaml
	"SecurityInfo":                    {userChannel: true},  // information.security.yaml
	"SetAutoAdminPassword":            {userChannel: false}, // set.auto.admin.password.yaml
	"SetFirmwarePassword":             {userChannel: false}, // passcode.firmware.set.yaml
	"SetRecoveryLock":                 {userChannel: false}, // passcode.recovery.set.yaml
	"Settings":                        {userChannel: true},  // settings.yaml
	"ShutDownDevice":                  {userChannel: false}, // device.shutdown.yaml
	"StopMirroring":                   {userChannel: false}, // mirroring.stop.yaml
	"UnlockUserAccount":               {userChannel: false}, // user.unlock.yaml
	"UserConfigured":                  {userChannel: true},  // user.configured.yaml
	"UserList":                        {userChannel: false}, // user.list.yaml
	"ValidateApplications":            {userChannel: false}, // application.validate.yaml
	"VerifyFirmwarePassword":          {userChannel: false}, // passcode.firmware.verify.yaml
	"VerifyRecoveryLock":              {userChannel: false}, // passcode.recovery.verify.yaml
}

package sim

import "github.com/bramley-mdm/bramley/mdm"

// neverNotNow lists the commands Apple says iOS never answers NotNow.
var neverNotNow = map[string]bool{
	"DeviceInformation": true, "ProfileList": true, "DeviceLock": true, "EraseDevice": true,
	"ClearPasscode": true, "CertificateList": true, "ProvisioningProfileList": true,
	"InstalledApplicationList": true, "Restrictions": true,
}

// answer builds the result a real device would send for a command, with
// the keys Apple's schema gives each response (and the captures show).
func (d *Device) answer(uuid, requestType string, cmd map[string]any) map[string]any {
	res := map[string]any{"UDID": d.UDID, "CommandUUID": uuid, "Status": mdm.StatusAcknowledged}
	if d.notNow > 0 && !neverNotNow[requestType] && d.rng.Float64() < d.notNow {
		res["Status"] = mdm.StatusNotNow
		return res
	}
	switch requestType {
	case "DeviceInformation":
		res["QueryResponses"] = d.queryResponses(cmd)
	case "DeviceConfigured":
		d.awaiting = false // Setup Assistant continues
	case "SecurityInfo":
		res["SecurityInfo"] = map[string]any{
			"HardwareEncryptionCaps": 3, "PasscodePresent": true, "PasscodeCompliant": true,
			"PasscodeCompliantWithProfiles": true, "PasscodeLockGracePeriodEnforced": 0,
			"ManagementStatus": map[string]any{"EnrolledViaDEP": d.ade.enrolled, "IsUserEnrollment": false, "UserApprovedEnrollment": true},
		}
	case "ProfileList":
		res["ProfileList"] = []any{map[string]any{
			"PayloadIdentifier": "com.bramley.enroll", "PayloadDisplayName": "bramley enrollment",
			"PayloadUUID": mdm.NewUUID(), "PayloadVersion": 1, "IsManaged": true, "IsEncrypted": false,
			"HasRemovalPasscode": false, "PayloadRemovalDisallowed": d.ade.enrolled && !d.ade.removable,
			"PayloadContent": []any{
				map[string]any{"PayloadType": "com.apple.mdm", "PayloadIdentifier": "com.bramley.enroll.mdm", "PayloadVersion": 1},
			},
			"SignerCertificates": []any{},
		}}
	case "CertificateList":
		res["CertificateList"] = []any{map[string]any{
			"CommonName": d.cert.Subject.CommonName, "Data": d.cert.Raw, "IsIdentity": true,
		}}
	case "InstalledApplicationList":
		res["InstalledApplicationList"] = []any{
			map[string]any{"Identifier": "com.apple.mobilesafari", "Name": "Safari", "ShortVersion": d.OSVersion, "Version": "8619.2.8", "BundleSize": 14000000},
			map[string]any{"Identifier": "com.example.notes", "Name": "Notes Pro", "ShortVersion": "4.2", "Version": "420", "BundleSize": 52000000, "IsValidated": true},
		}
	}
	return res
}

// queryResponses answers the queries the device knows and, as Apple
// documents, silently drops the rest.
func (d *Device) queryResponses(cmd map[string]any) map[string]any {
	known := map[string]any{
		"UDID": d.UDID, "SerialNumber": d.SerialNumber, "DeviceName": d.DeviceName,
		"Model": d.Model, "ModelName": d.ModelName, "ProductName": d.ProductName,
		"OSVersion": d.OSVersion, "BuildVersion": d.BuildVersion,
		"IsSupervised": d.ade.supervised, "IsActivationLockEnabled": false, "BatteryLevel": 0.87,
	}
	queries, _ := cmd["Queries"].([]any)
	if len(queries) == 0 {
		return known
	}
	out := make(map[string]any, len(queries))
	for _, q := range queries {
		if name, ok := q.(string); ok {
			if v, ok := known[name]; ok {
				out[name] = v
			}
		}
	}
	return out
}

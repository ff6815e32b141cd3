-- 0007: Setup Assistant enrollment (/ade/enroll) finds a device's ADE
-- record by serial number alone, under whichever token holds it. Kept in
-- lockstep with storage/postgres/migrations/0007_ade_enroll.sql.

CREATE INDEX ade_devices_serial ON ade_devices (serial_number);

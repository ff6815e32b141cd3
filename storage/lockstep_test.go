package storage_test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// schemaOf returns, for each table a migration directory creates, its
// columns, and the names of the indexes it creates.
func schemaOf(t *testing.T, dir string) (files []string, tables map[string][]string, indexes []string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	createTable := regexp.MustCompile(`(?is)CREATE TABLE (\w+) \((.*?)\n\)`)
	createIndex := regexp.MustCompile(`(?i)CREATE (?:UNIQUE )?INDEX (\w+)`)
	column := regexp.MustCompile(`^\s*(\w+)\s+\w+`)
	tables = map[string][]string{}
	for _, e := range entries {
		files = append(files, e.Name())
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range createTable.FindAllStringSubmatch(string(b), -1) {
			var cols []string
			for _, line := range strings.Split(m[2], "\n") {
				c := column.FindStringSubmatch(line)
				if c == nil || strings.EqualFold(c[1], "PRIMARY") || strings.HasPrefix(strings.TrimSpace(line), "--") {
					continue
				}
				cols = append(cols, strings.ToLower(c[1]))
			}
			tables[strings.ToLower(m[1])] = cols
		}
		for _, m := range createIndex.FindAllStringSubmatch(string(b), -1) {
			indexes = append(indexes, strings.ToLower(m[1]))
		}
	}
	return files, tables, indexes
}

// TestMigrationsInLockstep checks that both dialects have the same
// migrations, creating the same tables with the same columns and the same
// indexes, so a feature never lands in one backend only.
func TestMigrationsInLockstep(t *testing.T) {
	sqliteFiles, sqliteTables, sqliteIndexes := schemaOf(t, "sqlite/migrations")
	pgFiles, pgTables, pgIndexes := schemaOf(t, "postgres/migrations")
	if !slices.Equal(sqliteFiles, pgFiles) {
		t.Errorf("migration files differ:\n sqlite   %v\n postgres %v", sqliteFiles, pgFiles)
	}
	if len(sqliteTables) == 0 {
		t.Fatal("no tables found in the SQLite migrations")
	}
	for name, cols := range sqliteTables {
		if !slices.Equal(cols, pgTables[name]) {
			t.Errorf("table %s:\n sqlite   %v\n postgres %v", name, cols, pgTables[name])
		}
	}
	for name := range pgTables {
		if _, ok := sqliteTables[name]; !ok {
			t.Errorf("table %s exists in PostgreSQL only", name)
		}
	}
	slices.Sort(sqliteIndexes)
	slices.Sort(pgIndexes)
	if !slices.Equal(sqliteIndexes, pgIndexes) {
		t.Errorf("indexes differ:\n sqlite   %v\n postgres %v", sqliteIndexes, pgIndexes)
	}
}

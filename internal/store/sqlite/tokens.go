package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/store"
)

func (s *Store) TokenCreate(ctx context.Context, p *store.TokenCreateParams) (*berth.Token, error) {
	t := now(p.Now)
	tok := &berth.Token{Name: p.Name, Role: p.Role, CreatedAt: t, CreatedBy: p.Actor}
	err := s.tx(ctx, func(tx *wtx) error {
		var one int
		err := tx.QueryRowContext(ctx, "SELECT 1 FROM tokens WHERE name = ?", p.Name).Scan(&one)
		if err == nil {
			return berth.Errorf(berth.EConflict, "a token named %q exists already; revoke it first", p.Name)
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("find token: %w", err)
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO tokens (name, role, hash, created_at, created_by) VALUES (?, ?, ?, ?, ?)",
			p.Name, string(p.Role), p.Hash, nanos(t), p.Actor); err != nil {
			return fmt.Errorf("insert token: %w", err)
		}
		return (&eventWriter{tx: tx}).write(&berth.Event{Time: t, Kind: berth.EventAdmin, Reason: store.ReasonTokenCreated, Actor: p.Actor,
			Message: fmt.Sprintf("token %s created with role %s", p.Name, p.Role)})
	})
	if err != nil {
		return nil, wrap("create token", err)
	}
	return tok, nil
}

func (s *Store) TokenList(ctx context.Context) ([]*berth.Token, error) {
	rows, err := s.r.QueryContext(ctx, "SELECT name, role, created_at, created_by FROM tokens ORDER BY name")
	if err != nil {
		return nil, fmt.Errorf("sqlite: list tokens: %w", err)
	}
	defer rows.Close()
	out := []*berth.Token{}
	for rows.Next() {
		tok, err := scanToken(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: list tokens: %w", err)
		}
		out = append(out, tok)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list tokens: %w", err)
	}
	return out, nil
}

func (s *Store) TokenByHash(ctx context.Context, hash string) (*berth.Token, error) {
	tok, err := scanToken(s.r.QueryRowContext(ctx, "SELECT name, role, created_at, created_by FROM tokens WHERE hash = ?", hash))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: find token: %w", err)
	}
	return tok, nil
}

func (s *Store) TokenRevoke(ctx context.Context, p *store.TokenRevokeParams) (*berth.Token, error) {
	t := now(p.Now)
	var tok *berth.Token
	err := s.tx(ctx, func(tx *wtx) error {
		var err error
		tok, err = scanToken(tx.QueryRowContext(ctx, "DELETE FROM tokens WHERE name = ? RETURNING name, role, created_at, created_by", p.Name))
		if errors.Is(err, sql.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("delete token: %w", err)
		}
		return (&eventWriter{tx: tx}).write(&berth.Event{Time: t, Kind: berth.EventAdmin, Reason: store.ReasonTokenRevoked, Actor: p.Actor,
			Message: fmt.Sprintf("token %s (role %s) revoked", tok.Name, tok.Role)})
	})
	if err != nil {
		return nil, wrap("revoke token", err)
	}
	return tok, nil
}

func scanToken(row scanner) (*berth.Token, error) {
	var (
		tok berth.Token
		at  int64
	)
	if err := row.Scan(&tok.Name, &tok.Role, &at, &tok.CreatedBy); err != nil {
		return nil, err
	}
	tok.CreatedAt = fromNanos(at)
	return &tok, nil
}

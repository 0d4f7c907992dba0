package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/store"
)

func (s *Store) TokenCreate(ctx context.Context, p *store.TokenCreateParams) (*berth.Token, error) {
	ctx, cancel := s.bound(ctx, opTimeout)
	defer cancel()
	t := now(p.Now)
	err := s.tx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO tokens (name, role, hash, created_at, created_by) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (name) DO NOTHING`, p.Name, string(p.Role), p.Hash, nanos(t), p.Actor)
		if err != nil {
			return fmt.Errorf("insert token: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return berth.Errorf(berth.EConflict, "a token named %q exists already; revoke it first", p.Name)
		}
		ev := &events{}
		ev.add(&berth.Event{Time: t, Kind: berth.EventAdmin, Reason: store.ReasonTokenCreated, Actor: p.Actor,
			Message: fmt.Sprintf("token %s created with role %s", p.Name, p.Role)})
		return ev.flush(ctx, tx)
	})
	if err != nil {
		return nil, wrap("create token", err)
	}
	return &berth.Token{Name: p.Name, Role: p.Role, CreatedAt: t, CreatedBy: p.Actor}, nil
}

func (s *Store) TokenList(ctx context.Context) ([]*berth.Token, error) {
	ctx, cancel := s.bound(ctx, opTimeout)
	defer cancel()
	rows, err := s.pool.Query(ctx, "SELECT name, role, created_at, created_by FROM tokens ORDER BY name")
	if err != nil {
		return nil, fmt.Errorf("postgres: list tokens: %w", err)
	}
	defer rows.Close()
	out := []*berth.Token{}
	for rows.Next() {
		tok, err := scanToken(rows)
		if err != nil {
			return nil, fmt.Errorf("postgres: list tokens: %w", err)
		}
		out = append(out, tok)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: list tokens: %w", err)
	}
	return out, nil
}

func (s *Store) TokenByHash(ctx context.Context, hash string) (*berth.Token, error) {
	ctx, cancel := s.bound(ctx, opTimeout)
	defer cancel()
	tok, err := scanToken(s.pool.QueryRow(ctx, "SELECT name, role, created_at, created_by FROM tokens WHERE hash = $1", hash))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: find token: %w", err)
	}
	return tok, nil
}

func (s *Store) TokenRevoke(ctx context.Context, p *store.TokenRevokeParams) (*berth.Token, error) {
	ctx, cancel := s.bound(ctx, opTimeout)
	defer cancel()
	t := now(p.Now)
	var tok *berth.Token
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var err error
		tok, err = scanToken(tx.QueryRow(ctx, "DELETE FROM tokens WHERE name = $1 RETURNING name, role, created_at, created_by", p.Name))
		if errors.Is(err, pgx.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("delete token: %w", err)
		}
		ev := &events{}
		ev.add(&berth.Event{Time: t, Kind: berth.EventAdmin, Reason: store.ReasonTokenRevoked, Actor: p.Actor,
			Message: fmt.Sprintf("token %s (role %s) revoked", tok.Name, tok.Role)})
		return ev.flush(ctx, tx)
	})
	if err != nil {
		return nil, wrap("revoke token", err)
	}
	return tok, nil
}

func scanToken(row pgx.Row) (*berth.Token, error) {
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

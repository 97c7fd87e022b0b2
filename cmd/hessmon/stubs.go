package main

import (
	"context"
	"errors"
)

var errTodo = errors.New("not implemented yet")

func runRuns(context.Context, *env, []string) error       { return errTodo }
func runShow(context.Context, *env, []string) error       { return errTodo }
func runExport(context.Context, *env, []string) error     { return errTodo }
func runPlot(context.Context, *env, []string) error       { return errTodo }
func runServe(context.Context, *env, []string) error      { return errTodo }
func benchOverhead(context.Context, *env, []string) error { return errTodo }

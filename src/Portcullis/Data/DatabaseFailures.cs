using System.Data.Common;
using Microsoft.EntityFrameworkCore;

namespace Portcullis.Data;

/// <summary>Which exceptions mean "the database could not be reached or answer", as opposed to a bug.</summary>
internal static class DatabaseFailures
{
    /// <summary>
    /// A failure of the database itself (connection refused, timeout, a failed save): callers that can keep serving
    /// from what they hold do so, and the rest answer 503 (docs/decisions.md, "Credential caches").
    /// </summary>
    public static bool IsDatabaseFailure(Exception e) =>
        e is DbException or TimeoutException or InvalidOperationException { InnerException: DbException or TimeoutException }
        || e is DbUpdateException || e.InnerException is DbException;

    /// <summary>A save refused by a unique constraint (SQLite's constraint error, PostgreSQL's 23505): someone made the same thing first.</summary>
    public static bool IsUniqueViolation(DbUpdateException e) =>
        e.InnerException is Microsoft.Data.Sqlite.SqliteException { SqliteErrorCode: 19 } or Npgsql.PostgresException { SqlState: "23505" };
}

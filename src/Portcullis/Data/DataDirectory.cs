namespace Portcullis.Data;

/// <summary>
/// The data directory, held with an exclusive lock for the life of the process so that a second
/// <c>portcullis serve</c> on the same SQLite file refuses to start instead of corrupting it.
/// </summary>
internal sealed class DataDirectory : IDisposable
{
    private readonly FileStream? _lock;

    private DataDirectory(string path, FileStream? lockFile)
    {
        Path = path;
        _lock = lockFile;
    }

    public string Path { get; }

    public static DataDirectory Open(string path, bool exclusive)
    {
        var full = System.IO.Path.GetFullPath(path);
        try
        {
            Directory.CreateDirectory(full);
            if (!OperatingSystem.IsWindows())
                File.SetUnixFileMode(full, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new StartupException($"Cannot create the data directory '{full}': {e.Message}. Set --data-dir or PORTCULLIS_DATA_DIR to a directory this user can write.");
        }
        if (!exclusive)
            return new DataDirectory(full, null);

        var lockPath = System.IO.Path.Combine(full, "portcullis.lock");
        try
        {
            // FileShare.None takes an advisory exclusive lock (flock) on Unix; it is released when the process dies.
            var stream = new FileStream(lockPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            stream.SetLength(0);
            using (var w = new StreamWriter(stream, leaveOpen: true))
                w.Write(Environment.ProcessId);
            stream.Flush();
            return new DataDirectory(full, stream);
        }
        catch (IOException)
        {
            throw new StartupException(
                $"Another Portcullis server is already using the data directory '{full}' (its lock file '{lockPath}' is held). " +
                "Stop that server, or give this one its own --data-dir. To run several instances together, use PostgreSQL (Database:Provider=postgres).");
        }
    }

    public void Dispose() => _lock?.Dispose();
}

/// <summary>A start-up problem the operator can fix; printed without a stack trace.</summary>
internal sealed class StartupException(string message) : Exception(message);

namespace Portcullis.Tests.Infrastructure;

/// <summary>The real Caddy (Debian package <c>caddy</c>) with a given Caddyfile, in a private directory.</summary>
public sealed class CaddyProcess : ProxyProcess
{
    private CaddyProcess(string directory) : base(directory) { }

    public static async Task<CaddyProcess> StartAsync(string caddyfile, int port)
    {
        var caddy = Find("caddy", "/usr/bin/caddy", "/usr/local/bin/caddy");
        var dir = System.IO.Directory.CreateTempSubdirectory("portcullis-caddy-").FullName;
        var file = Path.Combine(dir, "Caddyfile");
        await File.WriteAllTextAsync(file, caddyfile);
        var process = new CaddyProcess(dir);
        await process.StartAsync(caddy, ["run", "--config", file, "--adapter", "caddyfile"], port, caddyfile, new Dictionary<string, string>
        {
            ["HOME"] = dir, ["XDG_DATA_HOME"] = Path.Combine(dir, "data"), ["XDG_CONFIG_HOME"] = Path.Combine(dir, "config"),
        });
        return process;
    }
}
